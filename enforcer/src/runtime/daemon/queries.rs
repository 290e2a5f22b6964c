//! Read-only commands for the REST API and the CLI: a page of SIMs, and a policy text checked
//! or compared against the file in force. None changes anything.

use anyhow::Context as _;

use super::{Daemon, sim_addresses};
use crate::control::{Invalid, MAX_PAGE, PolicyCheck, SimPage, SimSummary};

impl Daemon {
    /// The SIMs of the policy in force that the filters keep, `limit` of them from `offset`, in
    /// policy order. One pass over the SIMs (a few milliseconds at a million).
    pub(super) fn sim_list(
        &self,
        offset: usize,
        limit: usize,
        segment: Option<&str>,
        state: Option<&str>,
        imsi_prefix: Option<&str>,
    ) -> anyhow::Result<SimPage> {
        if !(1..=MAX_PAGE).contains(&limit) {
            return Err(Invalid(format!("limit must be 1 to {MAX_PAGE}, not {limit}")).into());
        }
        if let Some(state) = state
            && !["active", "quarantined", "imei_mismatch"].contains(&state)
        {
            return Err(Invalid(format!(
                "state must be `active`, `quarantined` or `imei_mismatch`, not `{state}`"
            ))
            .into());
        }
        if let Some(prefix) = imsi_prefix
            && (prefix.len() > 15 || !prefix.bytes().all(|b| b.is_ascii_digit()))
        {
            return Err(Invalid(format!(
                "imsi_prefix must be up to 15 digits, not `{prefix}`"
            ))
            .into());
        }
        let segment_id = match segment {
            None => None,
            Some(name) => Some(
                self.policy
                    .segments
                    .iter()
                    .position(|s| s.name == name)
                    .ok_or_else(|| {
                        Invalid(format!("no segment `{name}` in the policy in force"))
                    })?,
            ),
        };
        let state_of = |sim: &crate::policy::Sim| {
            if sim.state == crate::policy::SimState::Quarantined {
                "quarantined"
            } else if sim.imei_mismatch() {
                "imei_mismatch"
            } else {
                "active"
            }
        };
        let mut total = 0;
        let mut sims = Vec::new();
        for sim in &self.policy.sims {
            if segment_id.is_some_and(|id| usize::from(sim.segment) != id)
                || state.is_some_and(|s| s != state_of(sim))
                || imsi_prefix.is_some_and(|p| !sim.imsi.to_string().starts_with(p))
            {
                continue;
            }
            if total >= offset && sims.len() < limit {
                sims.push(SimSummary {
                    imsi: sim.imsi.to_string(),
                    iccid: sim.iccid().map(|i| i.to_string()),
                    msisdn: sim.msisdn().map(|m| m.to_string()),
                    segment: self.policy.segment_name(sim.segment).to_owned(),
                    state: state_of(sim).to_owned(),
                    addresses: sim_addresses(sim).map(|a| a.to_string()).collect(),
                });
            }
            total += 1;
        }
        Ok(SimPage {
            total,
            offset,
            sims,
        })
    }

    /// Validate `text` as if it were the policy file in force (for messages and to find an
    /// inventory).
    fn validate_text(
        &self,
        text: &str,
    ) -> Result<crate::policy::ValidatedPolicy, crate::policy::PolicyErrors> {
        crate::policy::from_str_with(&self.policy.path, text, &self.settings.load)
    }

    /// [`crate::control::Command::PolicyCheck`].
    pub(super) fn policy_check(&self, text: &str) -> PolicyCheck {
        match self.validate_text(text) {
            Ok(policy) => PolicyCheck {
                valid: true,
                errors: Vec::new(),
                sims: policy.sims.len(),
                segments: policy.segments.len(),
                rules: policy.rule_count(),
            },
            Err(errors) => PolicyCheck {
                valid: false,
                errors: errors.0.iter().map(ToString::to_string).collect(),
                sims: 0,
                segments: 0,
                rules: 0,
            },
        }
    }

    /// [`crate::control::Command::PolicyDiff`]: against the file in force as it is on disk
    /// (not the run-time quarantines and bindings).
    pub(super) fn policy_diff(&self, text: &str) -> anyhow::Result<serde_json::Value> {
        let new = self
            .validate_text(text)
            .map_err(|errors| Invalid(format!("the policy is invalid: {errors}")))?;
        let old = crate::policy::load_with(&self.policy.path, &self.settings.load)
            .with_context(|| format!("reading the file in force {}", self.policy.path.display()))?;
        serde_json::to_value(crate::diff::diff(&old, &new)).context("encoding the diff")
    }
}
