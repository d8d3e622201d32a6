//! Which statements of a downgrade may lose data, read with a real SQL
//! parser (PostgreSQL dialect) and judged against an **allow-list**: a
//! statement is safe only when it is known to keep every row and value.
//! Everything else is destructive, and so is anything the parser cannot
//! read: a deny-list of keywords can never be complete (`DROP SCHEMA …
//! CASCADE`, `DROP OWNED BY`, `DROP TYPE … CASCADE`, `UPDATE … SET col =
//! NULL`, a lossy `ALTER COLUMN … TYPE` all once passed as safe).
//!
//! Known to keep data:
//! - transaction control, `SET`, `COMMENT ON`, `GRANT`/`REVOKE`, a plain
//!   `SELECT` (no `WITH`: a `WITH` can hold a `DELETE`);
//! - `CREATE` of a table, index, view, schema, sequence, type, function,
//!   extension or domain; `INSERT` without `ON CONFLICT`;
//! - `DROP INDEX`, `DROP VIEW` / `MATERIALIZED VIEW` / `FUNCTION` without
//!   `CASCADE`, `DROP TRIGGER`;
//! - `ALTER TABLE` whose every action adds a column or a constraint, drops
//!   a constraint or a key, renames, sets or drops a default or `NOT NULL`,
//!   validates a constraint, enables or disables a trigger, or changes
//!   the owner; `ALTER INDEX`; `ALTER TYPE` (adding or renaming values);
//! - `UPDATE`, `DELETE` and `INSERT` on `alembic_version`, the migration
//!   tool's own bookkeeping;
//!
//! and in any of them, only calls of functions known to change nothing
//! ([`HARMLESS_FUNCTIONS`]: `now()`, `nextval()`, `pg_sleep()`…): any other
//! function can run arbitrary code (`SELECT cleanup()`). `CREATE TRIGGER`
//! is destructive too: its function runs on the writes that follow, even
//! Alembic's own. The text each statement is parsed from is the original
//! (strings keep their `''` escapes), so what is judged is what runs.
//!
//! What is judged is the SQL Alembic prints offline: a migration that
//! behaves differently online (`context.is_offline_mode()`), or changes data
//! in Python, is not seen.

use std::ops::ControlFlow;

use sqlparser::ast::{
    visit_expressions, AlterColumnOperation, AlterTableOperation, DropBehavior, Expr, ObjectType,
    SetExpr, Statement,
};
use sqlparser::dialect::PostgreSqlDialect;
use sqlparser::parser::Parser;
use sqlparser::tokenizer::{Token, Tokenizer};

/// The statements of `sql` that may lose data, each quoted with why.
pub(crate) fn destructive_statements(sql: &str) -> Vec<String> {
    let dialect = PostgreSqlDialect {};
    // Without unescaping, tokens print back as written: `'it''s'` stays so.
    let tokens = match Tokenizer::new(&dialect, sql)
        .with_unescape(false)
        .tokenize()
    {
        Ok(tokens) => tokens,
        Err(e) => {
            return vec![format!(
                "the SQL cannot be read ({e}), so it counts as destructive"
            )]
        }
    };
    let mut found = Vec::new();
    for piece in tokens.split(|t| *t == Token::SemiColon) {
        let text: String = piece.iter().map(ToString::to_string).collect();
        let quoted = quote(&text);
        if quoted.is_empty() {
            continue;
        }
        match Parser::parse_sql(&dialect, &text) {
            Ok(statements) => {
                for statement in &statements {
                    if let Err(why) = keeps_data(statement) {
                        found.push(format!("`{quoted}` ({why})"));
                    }
                }
            }
            Err(e) => found.push(format!(
                "`{quoted}` (cannot be parsed: {}; what rollbackd cannot read counts as destructive)",
                quote(&e.to_string().replace("sql parser error: ", ""))
            )),
        }
    }
    found
}

/// The statement on one line, comments left out, at most 160 characters.
fn quote(text: &str) -> String {
    let code: Vec<&str> = text
        .lines()
        .map(|l| l.split("--").next().unwrap_or_default())
        .collect();
    let one_line = code
        .join(" ")
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ");
    match one_line.char_indices().nth(160) {
        Some((at, _)) => format!("{}…", &one_line[..at]),
        None => one_line,
    }
}

/// Functions known to change no data, callable in an allowed statement.
pub(crate) const HARMLESS_FUNCTIONS: [&str; 34] = [
    "now",
    "clock_timestamp",
    "statement_timestamp",
    "transaction_timestamp",
    "timezone",
    "date_trunc",
    "to_char",
    "to_timestamp",
    "nextval",
    "gen_random_uuid",
    "uuid_generate_v4",
    "random",
    "md5",
    "lower",
    "upper",
    "length",
    "trim",
    "btrim",
    "replace",
    "concat",
    "coalesce",
    "nullif",
    "greatest",
    "least",
    "round",
    "abs",
    "current_setting",
    "set_config",
    "version",
    "current_database",
    "pg_sleep",
    "pg_advisory_lock",
    "pg_advisory_unlock",
    "pg_try_advisory_lock",
];

/// `Ok` when `statement` is known to keep every row and value.
fn keeps_data(statement: &Statement) -> Result<(), String> {
    kind_keeps_data(statement)?;
    // A function's body is not run by creating it.
    if matches!(statement, Statement::CreateFunction(_)) {
        return Ok(());
    }
    let mut unknown = None;
    let _ = visit_expressions(statement, |e| {
        if let Expr::Function(f) = e {
            let name = f.name.to_string().to_lowercase();
            let bare = name
                .rsplit('.')
                .next()
                .unwrap_or_default()
                .trim_matches('"');
            if !HARMLESS_FUNCTIONS.contains(&bare) {
                unknown = Some(name);
                return ControlFlow::Break(());
            }
        }
        ControlFlow::Continue(())
    });
    match unknown {
        Some(name) => Err(format!("calls {name}(), which may change data")),
        None => Ok(()),
    }
}

fn kind_keeps_data(statement: &Statement) -> Result<(), String> {
    match statement {
        Statement::StartTransaction { .. }
        | Statement::Commit { .. }
        | Statement::Rollback { .. }
        | Statement::Set(_)
        | Statement::Comment { .. }
        | Statement::Grant(_)
        | Statement::Revoke(_)
        | Statement::CreateTable(_)
        | Statement::CreateIndex(_)
        | Statement::CreateView(_)
        | Statement::CreateSchema { .. }
        | Statement::CreateSequence { .. }
        | Statement::CreateType { .. }
        | Statement::CreateFunction(_)
        | Statement::CreateExtension(_)
        | Statement::CreateDomain(_)
        | Statement::DropTrigger(_)
        | Statement::AlterIndex { .. }
        | Statement::AlterType(_) => Ok(()),
        Statement::Query(query) => match (&query.with, query.body.as_ref()) {
            (None, SetExpr::Select(_) | SetExpr::Values(_)) => Ok(()),
            _ => Err("a query with WITH (or that is not a plain SELECT) can change data".into()),
        },
        Statement::DropFunction(drop) if drop.drop_behavior != Some(DropBehavior::Cascade) => {
            Ok(())
        }
        Statement::DropFunction(_) => Err("DROP FUNCTION … CASCADE drops what uses it".into()),
        Statement::CreateTrigger(_) => {
            Err("a trigger runs its function on the writes that follow".into())
        }
        Statement::Insert(insert) if insert.on.is_none() => Ok(()),
        Statement::Drop {
            object_type,
            cascade,
            ..
        } => match object_type {
            ObjectType::Index => Ok(()),
            ObjectType::View | ObjectType::MaterializedView if !cascade => Ok(()),
            other => Err(format!(
                "DROP {other}{} loses what it holds",
                if *cascade { " … CASCADE" } else { "" }
            )),
        },
        Statement::AlterTable(alter) => alter.operations.iter().try_for_each(keeps_data_alter),
        Statement::Update(_) | Statement::Delete(_) | Statement::Insert(_)
            if on_alembic_version(statement) =>
        {
            Ok(())
        }
        Statement::Update(_) => Err("UPDATE rewrites values".into()),
        Statement::Delete(_) => Err("DELETE removes rows".into()),
        Statement::Truncate(_) => Err("TRUNCATE removes every row".into()),
        Statement::Insert(_) => Err("INSERT … ON CONFLICT may overwrite rows".into()),
        _ => Err("not a statement known to keep data".into()),
    }
}

fn keeps_data_alter(op: &AlterTableOperation) -> Result<(), String> {
    use AlterColumnOperation as C;
    use AlterTableOperation as A;
    match op {
        A::AddConstraint { .. }
        | A::AddColumn { .. }
        | A::DropConstraint { .. }
        | A::DropPrimaryKey { .. }
        | A::DropForeignKey { .. }
        | A::DropIndex { .. }
        | A::RenameColumn { .. }
        | A::RenameTable { .. }
        | A::RenameConstraint { .. }
        | A::ValidateConstraint { .. }
        | A::EnableTrigger { .. }
        | A::DisableTrigger { .. }
        | A::OwnerTo { .. } => Ok(()),
        A::AlterColumn { op, .. } => match op {
            C::SetNotNull | C::DropNotNull | C::SetDefault { .. } | C::DropDefault => Ok(()),
            C::SetDataType { .. } => Err("changing a column's type can lose values".into()),
            _ => Err("this column change is not known to keep data".into()),
        },
        A::DropColumn { .. } => Err("DROP COLUMN loses the column's values".into()),
        _ => Err("this ALTER TABLE action is not known to keep data".into()),
    }
}

/// Whether an UPDATE, DELETE or INSERT targets `alembic_version` (in any
/// schema): the migration tool's bookkeeping.
fn on_alembic_version(statement: &Statement) -> bool {
    let text = statement.to_string();
    let words: Vec<&str> = text.split_whitespace().collect();
    let target = match words.as_slice() {
        ["UPDATE", table, ..] | ["DELETE", "FROM", table, ..] | ["INSERT", "INTO", table, ..] => {
            table
        }
        _ => return false,
    };
    let name = target.rsplit('.').next().unwrap_or_default();
    name.trim_matches('"').trim_end_matches('(') == "alembic_version"
}

#[cfg(test)]
mod tests {
    use super::*;

    fn verdicts(sql: &str) -> Vec<String> {
        destructive_statements(sql)
    }

    #[test]
    fn statements_that_keep_data_pass() {
        let sql = "-- Running downgrade c3 -> b2\n\
            BEGIN;\n\
            ALTER TABLE items ADD COLUMN note VARCHAR(200);\n\
            ALTER TABLE orders DROP CONSTRAINT fk_x;\n\
            ALTER TABLE orders ALTER COLUMN note DROP NOT NULL, ALTER COLUMN n SET DEFAULT 0;\n\
            ALTER TABLE items RENAME COLUMN a TO b;\n\
            DROP INDEX ix_items_note;\n\
            DROP VIEW v_items;\n\
            CREATE TABLE audit (id SERIAL PRIMARY KEY, at TIMESTAMP);\n\
            CREATE INDEX ix ON audit (at);\n\
            COMMENT ON TABLE audit IS 'x; y';\n\
            UPDATE alembic_version SET version_num='b2' WHERE alembic_version.version_num = 'c3';\n\
            DELETE FROM public.alembic_version WHERE alembic_version.version_num = 'a';\n\
            INSERT INTO alembic_version (version_num) VALUES ('b2');\n\
            COMMIT;\n";
        assert_eq!(verdicts(sql), Vec::<String>::new());
    }

    #[test]
    fn statements_that_lose_data_are_quoted_with_why() {
        let cases = [
            ("DROP SCHEMA IF EXISTS s CASCADE", "DROP SCHEMA … CASCADE"),
            ("DROP OWNED BY app", "counts as destructive"),
            ("DROP TYPE mood CASCADE", "DROP TYPE"),
            ("UPDATE items SET price = NULL", "UPDATE rewrites values"),
            (
                "ALTER TABLE items ALTER COLUMN price TYPE INTEGER",
                "type can lose values",
            ),
            ("ALTER TABLE items DROP COLUMN price", "DROP COLUMN"),
            ("DROP TABLE audit", "DROP TABLE"),
            ("TRUNCATE events", "TRUNCATE"),
            ("DELETE FROM sessions", "DELETE removes rows"),
            ("DROP VIEW v CASCADE", "DROP VIEW … CASCADE"),
            ("DROP SEQUENCE s", "DROP SEQUENCE"),
            (
                "INSERT INTO t (a) VALUES (1) ON CONFLICT (a) DO UPDATE SET a = 2",
                "ON CONFLICT",
            ),
            ("DO $$ BEGIN DELETE FROM t; END $$", ""),
            // Once passed as a plain SELECT, or through a function.
            ("WITH x AS (SELECT 1) DELETE FROM payments", "WITH"),
            (
                "WITH d AS (DELETE FROM orders RETURNING *) INSERT INTO orders_old SELECT * FROM d",
                "",
            ),
            ("SELECT cleanup_payments()", "calls cleanup_payments()"),
            ("INSERT INTO t (a) SELECT wipe()", "calls wipe()"),
            ("CREATE TABLE c AS SELECT purge()", "calls purge()"),
            ("UPDATE alembic_version SET version_num = (SELECT f())", "calls f()"),
            ("DROP FUNCTION f() CASCADE", "CASCADE"),
            ("CREATE TRIGGER t AFTER UPDATE ON alembic_version FOR EACH ROW EXECUTE FUNCTION wipe()", "trigger"),
            // An escaped quote once hid a second clause from the parser.
            ("ALTER TABLE t ALTER COLUMN c SET DEFAULT 'x'' --', DROP COLUMN price", "DROP COLUMN"),
            ("THIS IS NOT SQL", "cannot be parsed"),
        ];
        for (statement, why) in cases {
            let found = verdicts(&format!("BEGIN;\n{statement};\nCOMMIT;\n"));
            assert_eq!(found.len(), 1, "{statement}: {found:?}");
            assert!(found[0].starts_with('`'), "{found:?}");
            assert!(found[0].contains(why), "{statement}: {found:?}");
        }
    }

    #[test]
    fn harmless_calls_and_escaped_quotes_keep_a_downgrade_safe() {
        let sql = "ALTER TABLE t ADD COLUMN at TIMESTAMP DEFAULT now();\n\
                   ALTER TABLE t ADD COLUMN id UUID DEFAULT gen_random_uuid();\n\
                   SELECT pg_sleep(0.5);\n\
                   COMMENT ON TABLE t IS 'user''s orders';\n\
                   INSERT INTO t (name) VALUES ('O''Brien');\n\
                   CREATE FUNCTION f() RETURNS int AS $$ DELETE FROM t; SELECT 1 $$ LANGUAGE sql;\n\
                   DROP FUNCTION f();\n";
        assert_eq!(verdicts(sql), Vec::<String>::new());
    }

    #[test]
    fn semicolons_in_strings_and_dollar_quotes_do_not_split_statements() {
        let sql = "COMMENT ON TABLE t IS 'a; DROP TABLE t';\n\
                   CREATE FUNCTION f() RETURNS int AS $$ SELECT 1; $$ LANGUAGE sql;\n";
        assert_eq!(verdicts(sql), Vec::<String>::new());
        let unterminated = verdicts("UPDATE alembic_version SET version_num = 'b2");
        assert_eq!(unterminated.len(), 1, "{unterminated:?}");
    }
}
