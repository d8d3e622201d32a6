//! Which statements of a downgrade may lose data, read with a real SQL
//! parser (PostgreSQL dialect) and judged against an **allow-list**: a
//! statement is safe only when it is known to keep every row and value.
//! Everything else is destructive, and so is anything the parser cannot
//! read: a deny-list of keywords can never be complete (`DROP SCHEMA …
//! CASCADE`, `DROP OWNED BY`, `DROP TYPE … CASCADE`, `UPDATE … SET col =
//! NULL`, a lossy `ALTER COLUMN … TYPE` all once passed as safe).
//!
//! Known to keep data:
//! - transaction control, `SET`, `COMMENT ON`, `GRANT`/`REVOKE`, `SELECT`;
//! - `CREATE` of a table, index, view, schema, sequence, type, function,
//!   trigger, extension or domain; `INSERT` without `ON CONFLICT`;
//! - `DROP INDEX`, `DROP VIEW` / `MATERIALIZED VIEW` without `CASCADE`,
//!   `DROP FUNCTION`, `DROP TRIGGER`;
//! - `ALTER TABLE` whose every action adds a column or a constraint, drops
//!   a constraint or a key, renames, sets or drops a default or `NOT NULL`,
//!   validates a constraint, enables or disables a trigger, or changes
//!   the owner; `ALTER INDEX`; `ALTER TYPE` (adding or renaming values);
//! - `UPDATE`, `DELETE` and `INSERT` on `alembic_version`, the migration
//!   tool's own bookkeeping.

use sqlparser::ast::{AlterColumnOperation, AlterTableOperation, ObjectType, Statement};
use sqlparser::dialect::PostgreSqlDialect;
use sqlparser::parser::Parser;
use sqlparser::tokenizer::{Token, Tokenizer};

/// The statements of `sql` that may lose data, each quoted with why.
pub fn destructive_statements(sql: &str) -> Vec<String> {
    let dialect = PostgreSqlDialect {};
    let tokens = match Tokenizer::new(&dialect, sql).tokenize() {
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

/// `Ok` when `statement` is known to keep every row and value.
fn keeps_data(statement: &Statement) -> Result<(), String> {
    match statement {
        Statement::StartTransaction { .. }
        | Statement::Commit { .. }
        | Statement::Rollback { .. }
        | Statement::Set(_)
        | Statement::Comment { .. }
        | Statement::Grant(_)
        | Statement::Revoke(_)
        | Statement::Query(_)
        | Statement::CreateTable(_)
        | Statement::CreateIndex(_)
        | Statement::CreateView(_)
        | Statement::CreateSchema { .. }
        | Statement::CreateSequence { .. }
        | Statement::CreateType { .. }
        | Statement::CreateFunction(_)
        | Statement::CreateTrigger(_)
        | Statement::CreateExtension(_)
        | Statement::CreateDomain(_)
        | Statement::DropFunction(_)
        | Statement::DropTrigger(_)
        | Statement::AlterIndex { .. }
        | Statement::AlterType(_) => Ok(()),
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
    fn semicolons_in_strings_and_dollar_quotes_do_not_split_statements() {
        let sql = "COMMENT ON TABLE t IS 'a; DROP TABLE t';\n\
                   CREATE FUNCTION f() RETURNS int AS $$ SELECT 1; $$ LANGUAGE sql;\n";
        assert_eq!(verdicts(sql), Vec::<String>::new());
        let unterminated = verdicts("UPDATE alembic_version SET version_num = 'b2");
        assert_eq!(unterminated.len(), 1, "{unterminated:?}");
    }
}
