//! `export`, `import`, `migrate`.

use crate::args::{ExportArgs, ImportArgs, MigrateArgs};
use crate::error::CliError;
use crate::ui::Ui;

pub(crate) async fn export(_ui: &Ui, _url: &str, _args: ExportArgs) -> Result<(), CliError> {
    Err(CliError::failed("not yet"))
}
pub(crate) async fn import(_ui: &Ui, _url: &str, _args: ImportArgs) -> Result<(), CliError> {
    Err(CliError::failed("not yet"))
}
pub(crate) async fn migrate(_ui: &Ui, _args: MigrateArgs) -> Result<(), CliError> {
    Err(CliError::failed("not yet"))
}
