//! One empty database per test on the shared PostgreSQL: chat-server runs its
//! migrations into it, and no test sees another's history.

use sqlx::Connection;

/// Creates an empty database; returns its URL.
pub async fn fresh_database() -> String {
    let admin = crate::admin_database_url();
    let name = crate::unique("chat_test").replace('-', "_");
    let mut conn = sqlx::PgConnection::connect(&admin)
        .await
        .expect("connect to the test PostgreSQL");
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&mut conn)
        .await
        .expect("create a test database");
    let (base, _) = admin.rsplit_once('/').expect("the database URL has a path");
    format!("{base}/{name}")
}
