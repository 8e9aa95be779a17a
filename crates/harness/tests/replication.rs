//! The replication pair really streams: a table made on the primary appears on the replica,
//! and stops appearing while replay is paused.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

#[tokio::test]
async fn the_replica_follows_the_primary_and_lags_while_paused() {
    let replication = harness::PostgresReplication::start().await.unwrap();
    let (primary, replica) = (replication.primary_port(), replication.replica_port());
    assert_eq!(replication.sql(replica, "select pg_is_in_recovery()").unwrap().trim(), "t");
    replication.sql(primary, "create table marks (n int); insert into marks values (1)").unwrap();
    let seen = async |expected: &str| {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let count = replication.sql(replica, "select count(*) from marks").unwrap_or_default();
            if count.trim() == expected {
                return;
            }
            assert!(Instant::now() < deadline, "the replica shows {count:?}, not {expected}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    seen("1").await;
    replication.pause_replay().unwrap();
    replication.sql(primary, "insert into marks values (2)").unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(replication.sql(replica, "select count(*) from marks").unwrap().trim(), "1", "paused");
    replication.resume_replay().unwrap();
    seen("2").await;
}
