//! The coordination topic: one partition, compacted (only each member's newest lease matters).

use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::error::KafkaError;
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::ClientConfig;

/// Creates `topic` if it does not exist. A broker that cannot create topics through the admin
/// API (the test broker creates them on first use instead) is not an error: producing to the
/// topic creates it there, or the coordinator falls back to the partition share.
pub async fn ensure(client: &ClientConfig, topic: &str) -> Result<(), KafkaError> {
    let admin: AdminClient<DefaultClientContext> = client.create()?;
    let new = NewTopic::new(topic, 1, TopicReplication::Fixed(-1))
        .set("cleanup.policy", "compact")
        // Leases are seconds long: a minute of history is plenty to compact away.
        .set("segment.ms", "60000");
    let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(5)));
    let results = admin.create_topics([&new], &opts).await?;
    for r in results {
        match r {
            Ok(_) => tracing::info!(topic, "budget topic created"),
            Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((_, code @ RDKafkaErrorCode::UnsupportedVersion)) => {
                tracing::debug!(
                    topic,
                    ?code,
                    "the broker cannot create topics by the admin API; producing will create it"
                );
            }
            Err((_, code)) => return Err(KafkaError::AdminOp(code)),
        }
    }
    Ok(())
}
