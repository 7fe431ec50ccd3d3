//! The behaviour every store implementation must have, written once against the traits.
//!
//! Each case is an async function taking fresh [`Stores`]; [`crate::conformance!`] turns the whole list
//! into `#[tokio::test]`s for one implementation, so SQLite and any other store run the very same tests:
//!
//! ```ignore
//! async fn open() -> Option<wafer_store::conformance::Stores> { /* a fresh, empty store */ }
//! wafer_store::conformance!(open);
//! ```
//!
//! The cases compare no times of their own: waiting is expressed as durations the store measures with
//! its own clock (a retry due in an hour, a lease of a few milliseconds).

pub mod access;
pub mod claims;
pub mod cluster;
pub mod executions;
pub mod letters;
pub mod meta;
pub mod postgres;
pub mod rollups;
pub mod state;

use crate::{AccessStore, ClusterStore, ExecutionStore, KeySource, MetaStore, StateStore};
use std::sync::Arc;

/// The secrets key of tests that start several nodes on one database, which must share a key.
pub const TEST_SECRETS_KEY: &str =
    "5afe5afe5afe5afe5afe5afe5afe5afe5afe5afe5afe5afe5afe5afe5afe5afe";

/// [`TEST_SECRETS_KEY`] as a key source.
pub fn test_secrets_key() -> KeySource {
    KeySource::Value(TEST_SECRETS_KEY.into())
}

/// One store implementation's traits, fresh and empty, with whatever must live as long as they
/// do (a temporary directory, a database).
pub struct Stores {
    /// Functions and versions.
    pub meta: Arc<dyn MetaStore>,
    /// Execution records and the queue.
    pub executions: Arc<dyn ExecutionStore>,
    /// Key-value stores and variables.
    pub state: Arc<dyn StateStore>,
    /// The change feed and the nodes.
    pub cluster: Arc<dyn ClusterStore>,
    /// API keys and the audit log.
    pub access: Arc<dyn AccessStore>,
    /// Dropped with the stores.
    pub keep: Box<dyn std::any::Any + Send + Sync>,
}

/// Runs every conformance case as a test against the stores `$open` (an async function returning fresh
/// [`Stores`], or `None` when the store cannot run here, which skips the case) makes.
#[macro_export]
macro_rules! conformance {
    ($open:path) => {
        $crate::conformance!(@cases $open;
            meta::versions_count_from_one_and_the_newest_goes_live,
            meta::a_version_is_stored_with_its_module_bytes,
            meta::a_taken_route_refuses_the_whole_deploy_and_keeps_no_bytes,
            meta::several_functions_deploy_together_or_not_at_all,
            meta::rollback_to_an_unknown_version_is_not_found,
            meta::delete_removes_only_unshared_modules,
            meta::a_files_bundle_is_stored_with_its_version_and_goes_with_its_last_user,
            meta::aliases_name_versions_and_live_moves_with_deploys_and_its_routes,
            claims::a_claimed_execution_is_claimed_once_and_finishes_once,
            claims::only_the_claiming_node_records_an_attempt,
            claims::a_batch_claims_after_its_writes_in_one_transaction,
            claims::a_batch_claims_earlier_work_first_and_its_own_as_any_claim,
            claims::a_retry_waits_for_its_delay,
            claims::an_expired_lease_is_swept_back_into_the_queue,
            claims::a_renewed_lease_is_kept,
            claims::a_start_requeues_only_the_nodes_own_claims,
            claims::a_released_claim_is_queued_again_without_counting_its_attempt,
            executions::listing_pages_newest_first_and_filters_by_status,
            executions::a_sync_execution_is_stored_with_its_attempt_and_what_it_owes,
            executions::retention_keeps_the_newest_and_owed_callbacks,
            executions::retention_of_many_records_deletes_them_all_and_keeps_the_newest,
            executions::log_cursors_see_every_line_of_concurrent_writers,
            executions::a_schedule_tick_fires_once,
            executions::a_finished_execution_owes_its_callback_until_delivered,
            executions::the_queue_reports_its_depth_and_age,
            claims::concurrent_claimers_never_share_an_execution,
            claims::a_lapsed_last_attempt_is_dead_and_owes_its_callback,
            rollups::rollups_add_up_across_writers_and_prune_after_two_days,
            letters::a_key_names_one_execution_and_a_full_queue_refuses,
            letters::concurrent_submissions_with_one_key_make_one_execution,
            letters::a_dead_letter_keeps_its_request_and_is_retried_as_the_same_execution,
            letters::a_redrive_takes_back_every_kept_dead_letter_and_they_outlive_other_records,
            letters::a_destination_is_owed_until_delivered_and_claimed_once,
            cluster::every_change_to_a_function_moves_the_feed,
            cluster::nodes_beat_and_leave,
            state::values_round_trip_per_store,
            state::a_store_refuses_writes_past_its_cap_and_keeps_its_data,
            state::keys_page_in_order_and_increments_count_in_decimal,
            state::concurrent_increments_all_count,
            state::variables_replace_or_merge_and_keep_secrets_apart,
            access::keys_are_stored_hashed_listed_and_revoked_once,
            access::the_audit_log_pages_newest_first,
        );
    };
    (@cases $open:path; $($group:ident :: $case:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                let Some(stores) = $open().await else {
                    return;
                };
                $crate::conformance::$group::$case(&stores).await;
            }
        )*
    };
}
