//! rollbackd's own tables, versioned in `<schema>.meta`.

use std::io;

use super::{key, pg_error};

/// The schema version this rollbackd creates and reads.
const SCHEMA_VERSION: i32 = 1;

/// Creates or upgrades rollbackd's tables, once, however many replicas
/// start at the same moment.
pub(super) async fn ensure_schema(
    client: &mut tokio_postgres::Client,
    schema: &str,
) -> io::Result<()> {
    let tx = client.transaction().await.map_err(pg_error)?;
    tx.execute(
        "SELECT pg_advisory_xact_lock($1)",
        &[&key(schema, "schema")],
    )
    .await
    .map_err(pg_error)?;
    tx.batch_execute(&format!(
        "CREATE SCHEMA IF NOT EXISTS {schema};
         CREATE TABLE IF NOT EXISTS {schema}.meta (
             id int PRIMARY KEY CHECK (id = 1),
             version int NOT NULL);
         CREATE TABLE IF NOT EXISTS {schema}.documents (
             name text PRIMARY KEY,
             body bytea NOT NULL,
             updated_at timestamptz NOT NULL DEFAULT now());
         CREATE TABLE IF NOT EXISTS {schema}.leader (
             id int PRIMARY KEY CHECK (id = 1),
             epoch bigint NOT NULL,
             holder text,
             since timestamptz);
         INSERT INTO {schema}.leader (id, epoch) VALUES (1, 0) ON CONFLICT DO NOTHING;"
    ))
    .await
    .map_err(pg_error)?;
    let version: Option<i32> = tx
        .query_opt(
            &format!("SELECT version FROM {schema}.meta WHERE id = 1"),
            &[],
        )
        .await
        .map_err(pg_error)?
        .map(|r| r.get(0));
    match version {
        None => {
            tx.execute(
                &format!("INSERT INTO {schema}.meta (id, version) VALUES (1, $1)"),
                &[&SCHEMA_VERSION],
            )
            .await
            .map_err(pg_error)?;
        }
        Some(v) if v > SCHEMA_VERSION => {
            return Err(io::Error::other(format!(
                "the tables in schema {schema} were made by a newer rollbackd (version {v}, this one knows {SCHEMA_VERSION}); upgrade this rollbackd"
            )))
        }
        Some(_) => {}
    }
    tx.commit().await.map_err(pg_error)
}
