//! Schema version 2: the server-side functions every write is one call of
//! (`SELECT fn(…)`, one statement, one round trip), so that a write's
//! version check, keyed-write lookup, rows, counters, metadata patch and
//! remembered write happen in one atomic statement on the server.
//!
//! Each write function locks the session row (`SELECT … FOR UPDATE`, in
//! `head`), which serialises the writes of one session; a session that
//! has expired is deleted there and seen as missing. Each returns a
//! `jsonb` reply the Rust side parses (`ops::Reply`): `{"ok": …}`,
//! `{"replay": [version, first_position, count]}` or
//! `{"err": "conflict" | "not_found" | "exists" | "range" | "too_many", …}`
//! — a refusal writes nothing, since every check runs before any row is
//! changed.
//!
//! Arguments: the session id, `now` (milliseconds since the epoch, the
//! client's clock as in the other backends), `ttl` (milliseconds, `NULL`:
//! never expire), an options object `o` and, where there are any, rows as
//! `text[]`. An expectation is `o.ek` (`any`, `version`, `absent`) and
//! `o.ev` (the version).

use std::fmt::Write as _;

use crate::schema::Names;

/// Version 1 to 2: the functions.
pub(crate) fn create_v2(n: &Names) -> String {
    let sessions = n.table("sessions");
    let messages = n.table("messages");
    let summaries = n.table("summaries");
    let writes = n.table("writes");
    let pending = n.table("pending");
    let f = |name: &str| n.table(name);
    let (admits, patch, add, drop, head, remember) = (
        f("fn_admits"),
        f("fn_patch"),
        f("fn_add"),
        f("fn_drop"),
        f("fn_head"),
        f("fn_remember"),
    );
    let remembered = statestore_core::REMEMBERED_WRITES;
    let mut sql = String::new();
    // Whether expectation `o` admits the version `actual` (NULL: missing).
    let _ = write!(
        sql,
        r#"CREATE FUNCTION {admits}(o jsonb, actual bigint) RETURNS boolean
           LANGUAGE sql IMMUTABLE AS $f$
             SELECT CASE o->>'ek'
                      WHEN 'version' THEN actual IS NOT NULL AND actual = (o->>'ev')::bigint
                      WHEN 'absent' THEN actual IS NULL
                      ELSE true END
           $f$;
        CREATE FUNCTION {patch}(m jsonb, p jsonb) RETURNS jsonb
           LANGUAGE sql IMMUTABLE AS $f$
             SELECT CASE WHEN p IS NULL OR p = '{{}}'::jsonb THEN m ELSE
               (m - ARRAY(SELECT key FROM jsonb_each(p) WHERE value = 'null'::jsonb))
               || coalesce((SELECT jsonb_object_agg(key, value) FROM jsonb_each(p)
                            WHERE value <> 'null'::jsonb), '{{}}'::jsonb) END
           $f$;
        CREATE FUNCTION {add}(c jsonb, d jsonb) RETURNS jsonb
           LANGUAGE sql IMMUTABLE AS $f$
             SELECT CASE WHEN d IS NULL OR d = '{{}}'::jsonb THEN c ELSE
               c || (SELECT jsonb_object_agg(key, least(
                        coalesce((c->>key)::numeric, 0) + value::text::numeric,
                        18446744073709551615::numeric))
                     FROM jsonb_each(d)) END
           $f$;
        CREATE FUNCTION {drop}(p_id text) RETURNS boolean LANGUAGE plpgsql AS $f$
           BEGIN
             DELETE FROM {messages} WHERE session = p_id;
             DELETE FROM {summaries} WHERE session = p_id;
             DELETE FROM {writes} WHERE session = p_id;
             DELETE FROM {pending} WHERE session = p_id;
             DELETE FROM {sessions} WHERE id = p_id;
             RETURN FOUND;
           END $f$;
        CREATE FUNCTION {head}(p_id text, p_now bigint) RETURNS {sessions}
           LANGUAGE plpgsql AS $f$
           DECLARE h {sessions};
           BEGIN
             SELECT * INTO h FROM {sessions} WHERE id = p_id FOR UPDATE;
             IF NOT FOUND THEN RETURN NULL; END IF;
             IF h.expires_at IS NOT NULL AND h.expires_at <= p_now THEN
               PERFORM {drop}(p_id);
               RETURN NULL;
             END IF;
             RETURN h;
           END $f$;
        CREATE FUNCTION {remember}(p_id text, k text, ver bigint, fpos bigint, cnt bigint,
                                   p_seq bigint) RETURNS void LANGUAGE plpgsql AS $f$
           BEGIN
             DELETE FROM {pending} WHERE session = p_id AND key = k;
             INSERT INTO {writes} (session, key, version, first_position, count, seq)
               VALUES (p_id, k, ver, fpos, cnt, p_seq);
             DELETE FROM {writes} AS x WHERE x.session = p_id AND x.seq <= p_seq - {remembered};
             UPDATE {sessions} SET write_seq = p_seq WHERE id = p_id;
           END $f$;
"#
    );
    let bump = |keep: &str| {
        format!(
            "version = version + 1,
             updated_at = CASE WHEN {keep} THEN updated_at ELSE p_now END,
             last_accessed_at = CASE WHEN {keep} THEN last_accessed_at
                                     ELSE greatest(last_accessed_at, p_now) END,
             expires_at = CASE WHEN {keep} OR p_ttl IS NULL THEN expires_at
                               ELSE p_now + p_ttl END"
        )
    };
    let (bump_now, bump_keep) = (bump("false"), bump("keep"));
    let access = format!(
        "UPDATE {sessions} SET last_accessed_at = greatest(last_accessed_at, p_now),
             expires_at = CASE WHEN p_ttl IS NULL THEN expires_at
                               ELSE greatest(coalesce(expires_at, 0), p_now + p_ttl) END
         WHERE id"
    );
    let expiry = "CASE WHEN p_ttl IS NULL THEN NULL ELSE p_now + p_ttl END";
    let conflict = "RETURN jsonb_build_object('err', 'conflict', 'actual', h.version);";
    let (append, save, fork, merge, summary, touch, purge) = (
        f("fn_append"),
        f("fn_save"),
        f("fn_fork"),
        f("fn_merge"),
        f("fn_summary"),
        f("fn_touch"),
        f("fn_purge"),
    );
    let delete = f("fn_delete");
    let _ = write!(
        sql,
        r#"
        CREATE FUNCTION {append}(p_id text, p_now bigint, p_ttl bigint, o jsonb, bodies text[])
           RETURNS jsonb LANGUAGE plpgsql AS $f$
           DECLARE
             h {sessions};
             w {writes};
             k text := o->>'key';
             n bigint := coalesce(cardinality(bodies), 0);
             mx bigint := (o->>'max')::bigint;
             ver bigint; fpos bigint; nseq bigint;
           BEGIN
             h := {head}(p_id, p_now);
             IF h.id IS NOT NULL AND k IS NOT NULL THEN
               SELECT * INTO w FROM {writes} WHERE session = p_id AND key = k;
               IF FOUND THEN
                 {access} = p_id;
                 RETURN jsonb_build_object('replay',
                   jsonb_build_array(w.version, w.first_position, w.count));
               END IF;
             END IF;
             IF NOT {admits}(o, h.version) THEN {conflict} END IF;
             IF mx IS NOT NULL AND coalesce(h.message_count, 0) + n > mx THEN
               RETURN jsonb_build_object('err', 'too_many', 'total', coalesce(h.message_count, 0) + n);
             END IF;
             IF h.id IS NULL THEN
               INSERT INTO {sessions} (id, version, message_count, metadata, counters, created_at,
                   updated_at, last_accessed_at, expires_at, write_seq)
                 VALUES (p_id, 1, n, {patch}('{{}}', o->'metadata'), {add}('{{}}', o->'counters'),
                   p_now, p_now, p_now, {expiry}, 0);
               ver := 1; fpos := 0; nseq := 1;
             ELSE
               UPDATE {sessions} SET message_count = message_count + n,
                   counters = {add}(counters, o->'counters'),
                   metadata = {patch}(metadata, o->'metadata'), {bump_now}
                 WHERE id = p_id;
               ver := h.version + 1; fpos := h.message_count; nseq := h.write_seq + 1;
             END IF;
             INSERT INTO {messages} (session, position, body)
               SELECT p_id, fpos + t.i - 1, t.b FROM unnest(bodies) WITH ORDINALITY AS t(b, i);
             IF k IS NOT NULL THEN PERFORM {remember}(p_id, k, ver, fpos, n, nseq); END IF;
             RETURN jsonb_build_object('ok', jsonb_build_array(ver, fpos, n));
           END $f$;
        CREATE FUNCTION {save}(p_id text, p_now bigint, p_ttl bigint, o jsonb, bodies text[],
                               sums text[]) RETURNS jsonb LANGUAGE plpgsql AS $f$
           DECLARE
             h {sessions};
             keep boolean := coalesce((o->>'keep')::boolean, false);
             ver bigint; nseq bigint; carried bigint := 0; w jsonb;
           BEGIN
             h := {head}(p_id, p_now);
             IF NOT {admits}(o, h.version) THEN {conflict} END IF;
             IF h.id IS NULL THEN
               INSERT INTO {sessions} (id, user_id, version, message_count, summary_count,
                   system_prompt, metadata, counters, created_at, updated_at, last_accessed_at,
                   expires_at, write_seq)
                 VALUES (p_id, o->>'user_id', 1, coalesce(cardinality(bodies), 0),
                   coalesce(cardinality(sums), 0), o->>'system_prompt', o->'metadata',
                   o->'counters', (o->>'created_at')::bigint, p_now, p_now, {expiry}, 0);
               ver := 1; nseq := 0;
             ELSE
               UPDATE {writes} SET first_position = -1 WHERE session = p_id;
               DELETE FROM {messages} WHERE session = p_id;
               DELETE FROM {summaries} WHERE session = p_id;
               UPDATE {sessions} SET user_id = o->>'user_id', system_prompt = o->>'system_prompt',
                   metadata = o->'metadata', counters = o->'counters',
                   message_count = coalesce(cardinality(bodies), 0),
                   summary_count = coalesce(cardinality(sums), 0), {bump_keep}
                 WHERE id = p_id;
               ver := h.version + 1; nseq := h.write_seq;
             END IF;
             INSERT INTO {messages} (session, position, body)
               SELECT p_id, t.i - 1, t.b FROM unnest(bodies) WITH ORDINALITY AS t(b, i);
             INSERT INTO {summaries} (session, idx, body)
               SELECT p_id, t.i - 1, t.b FROM unnest(sums) WITH ORDINALITY AS t(b, i);
             FOR w IN SELECT value FROM jsonb_array_elements(coalesce(o->'writes', '[]'))
             LOOP
               INSERT INTO {writes} (session, key, version, first_position, count, seq)
                 VALUES (p_id, w->>0, 0, -1, (w->>1)::bigint, nseq + 1)
                 ON CONFLICT DO NOTHING;
               IF FOUND THEN nseq := nseq + 1; carried := carried + 1; END IF;
             END LOOP;
             IF carried > 0 THEN
               DELETE FROM {writes} AS x WHERE x.session = p_id AND x.seq <= nseq - {remembered};
               UPDATE {sessions} SET write_seq = nseq WHERE id = p_id;
             END IF;
             RETURN jsonb_build_object('ok', ver);
           END $f$;
        CREATE FUNCTION {fork}(p_source text, p_id text, p_now bigint, p_ttl bigint)
           RETURNS jsonb LANGUAGE plpgsql AS $f$
           DECLARE h {sessions};
           BEGIN
             h := {head}(p_source, p_now);
             IF h.id IS NULL THEN RETURN jsonb_build_object('err', 'not_found'); END IF;
             h := {head}(p_id, p_now);
             IF h.id IS NOT NULL THEN RETURN jsonb_build_object('err', 'exists'); END IF;
             INSERT INTO {sessions} (id, user_id, version, message_count, summary_count,
                 system_prompt, metadata, counters, created_at, updated_at, last_accessed_at,
                 expires_at, write_seq)
               SELECT p_id, user_id, 1, message_count, summary_count, system_prompt, metadata,
                 counters, p_now, p_now, p_now, {expiry}, 0
               FROM {sessions} WHERE id = p_source;
             INSERT INTO {messages} (session, position, body)
               SELECT p_id, position, body FROM {messages} WHERE session = p_source;
             INSERT INTO {summaries} (session, idx, body)
               SELECT p_id, idx, body FROM {summaries} WHERE session = p_source;
             {access} = p_source;
             RETURN jsonb_build_object('ok', 1);
           END $f$;
        CREATE FUNCTION {merge}(p_id text, p_now bigint, p_ttl bigint, o jsonb)
           RETURNS jsonb LANGUAGE plpgsql AS $f$
           DECLARE h {sessions};
           BEGIN
             h := {head}(p_id, p_now);
             IF NOT {admits}(o, h.version) THEN {conflict} END IF;
             IF h.id IS NULL THEN
               INSERT INTO {sessions} (id, version, metadata, created_at, updated_at,
                   last_accessed_at, expires_at, write_seq)
                 VALUES (p_id, 1, {patch}('{{}}', o->'patch'), p_now, p_now, p_now, {expiry}, 0);
               RETURN jsonb_build_object('ok', 1);
             END IF;
             UPDATE {sessions} SET metadata = {patch}(metadata, o->'patch'), {bump_now}
               WHERE id = p_id;
             RETURN jsonb_build_object('ok', h.version + 1);
           END $f$;
        CREATE FUNCTION {summary}(p_id text, p_now bigint, p_ttl bigint, o jsonb, body text)
           RETURNS jsonb LANGUAGE plpgsql AS $f$
           DECLARE h {sessions};
           BEGIN
             h := {head}(p_id, p_now);
             IF h.id IS NULL THEN RETURN jsonb_build_object('err', 'not_found'); END IF;
             IF NOT {admits}(o, h.version) THEN {conflict} END IF;
             IF (o->>'start')::numeric >= (o->>'end')::numeric
                OR (o->>'end')::numeric > h.message_count THEN
               RETURN jsonb_build_object('err', 'range', 'count', h.message_count);
             END IF;
             INSERT INTO {summaries} (session, idx, body) VALUES (p_id, h.summary_count, body);
             UPDATE {sessions} SET summary_count = summary_count + 1,
                 metadata = {patch}(metadata, o->'metadata'), {bump_now}
               WHERE id = p_id;
             RETURN jsonb_build_object('ok', h.version + 1);
           END $f$;
        CREATE FUNCTION {touch}(p_id text, p_now bigint, p_ttl bigint)
           RETURNS jsonb LANGUAGE plpgsql AS $f$
           DECLARE h {sessions};
           BEGIN
             h := {head}(p_id, p_now);
             IF h.id IS NULL THEN RETURN jsonb_build_object('ok', false); END IF;
             {access} = p_id;
             RETURN jsonb_build_object('ok', true);
           END $f$;
        CREATE FUNCTION {delete}(p_id text, p_now bigint)
           RETURNS boolean LANGUAGE plpgsql AS $f$
           DECLARE h {sessions};
           BEGIN
             h := {head}(p_id, p_now);
             PERFORM {drop}(p_id);
             RETURN h.id IS NOT NULL;
           END $f$;
        CREATE FUNCTION {purge}(p_now bigint, budget bigint)
           RETURNS bigint LANGUAGE plpgsql AS $f$
           DECLARE d text; n bigint := 0;
           BEGIN
             FOR d IN SELECT id FROM {sessions}
                      WHERE expires_at IS NOT NULL AND expires_at <= p_now
                      ORDER BY expires_at LIMIT budget FOR UPDATE SKIP LOCKED
             LOOP
               PERFORM {drop}(d);
               n := n + 1;
             END LOOP;
             DELETE FROM {pending} WHERE (session, key) IN (
               SELECT session, key FROM {pending}
                WHERE expires_at IS NOT NULL AND expires_at <= p_now
                ORDER BY expires_at LIMIT budget);
             RETURN n;
           END $f$;
"#
    );
    sql
}

/// Schema version 3 to 4: `fn_delete_guarded(id, now, o)`, the delete of
/// [`Store::delete_with`](statestore_core::Store::delete_with): the session
/// row locked, the expectation `o` checked (`conflict` and the version
/// found, deleting nothing), then every row of the session dropped.
/// Replies `{"ok": true|false}` (whether a live session was deleted).
pub(crate) fn create_v4(n: &Names) -> String {
    let f = |name: &str| n.table(name);
    let (sessions, admits, drop, head, guarded) = (
        n.table("sessions"),
        f("fn_admits"),
        f("fn_drop"),
        f("fn_head"),
        f("fn_delete_guarded"),
    );
    format!(
        r#"
        CREATE FUNCTION {guarded}(p_id text, p_now bigint, o jsonb)
           RETURNS jsonb LANGUAGE plpgsql AS $f$
           DECLARE h {sessions};
           BEGIN
             h := {head}(p_id, p_now);
             IF NOT {admits}(o, h.version) THEN
               RETURN jsonb_build_object('err', 'conflict', 'actual', h.version);
             END IF;
             PERFORM {drop}(p_id);
             RETURN jsonb_build_object('ok', h.id IS NOT NULL);
           END $f$;"#
    )
}
