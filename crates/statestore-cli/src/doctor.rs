//! `doctor`.

use crate::args::DoctorArgs;
use crate::error::CliError;
use crate::ui::Ui;

pub(crate) async fn run(_ui: &Ui, _url: &str, _args: DoctorArgs) -> Result<(), CliError> {
    Err(CliError::failed("not yet"))
}
