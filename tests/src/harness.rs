//! Load a policy into the real XDP program (no pins, no attach) and into the reference model,
//! run frames through both, and check verdicts and counter deltas.

use std::{collections::HashMap, path::Path};

use enforcer::{
    compile::{self, Compiled},
    counters,
    loader::{Capacity, Enforcer},
    policy::{self, ValidatedPolicy},
    reference::{Outcome, Reference},
};
use enforcer_common::{
    PassReason, Verdict,
    maps::{SEGMENT_NONE, SimEntry, names},
    session::{Session, SessionKey},
};

/// A session's (SIM, rule, state, flags, packets each way, bytes each way), as
/// [`Harness::sessions_agree`] compares them.
pub type SessionFields = (u32, u32, u8, u8, [u64; 2], [u64; 2]);

/// `ingress_ifindex` of test runs: loopback exists in every namespace.
pub const TEST_IFINDEX: u32 = 1;

/// A policy loaded on both sides.
pub struct Harness {
    /// The real program.
    pub enforcer: Enforcer,
    /// The reference model.
    pub reference: Reference,
    /// The validated policy.
    pub policy: ValidatedPolicy,
    /// Its compilation.
    pub compiled: Compiled,
}

impl Harness {
    /// Load policy text; `ifaces` maps ifindex → `IFACE_*` flags.
    ///
    /// # Panics
    /// If the policy is invalid or the program cannot be loaded (tests need root).
    #[must_use]
    pub fn new(policy_text: &str, ifaces: &[(u32, u32)]) -> Self {
        let policy = policy::from_str(Path::new("test.toml"), policy_text)
            .unwrap_or_else(|e| panic!("test policy is invalid:\n{e}\n{policy_text}"));
        Self::from_policy(policy, ifaces)
    }

    /// Load an already validated policy.
    ///
    /// # Panics
    /// If the program cannot be loaded (tests need root).
    #[must_use]
    pub fn from_policy(policy: ValidatedPolicy, ifaces: &[(u32, u32)]) -> Self {
        Self::load(policy, ifaces, None)
    }

    /// Load policy text with a session table of `sessions` entries (kernel and model alike).
    ///
    /// # Panics
    /// As [`Harness::new`].
    #[must_use]
    pub fn with_sessions(policy_text: &str, ifaces: &[(u32, u32)], sessions: u32) -> Self {
        let policy = policy::from_str(Path::new("test.toml"), policy_text)
            .unwrap_or_else(|e| panic!("test policy is invalid:\n{e}\n{policy_text}"));
        let harness = Self::load(policy, ifaces, Some(sessions));
        harness.reference.sessions().capacity = sessions as usize;
        harness
    }

    fn load(policy: ValidatedPolicy, ifaces: &[(u32, u32)], sessions: Option<u32>) -> Self {
        let compiled = compile::compile_fresh(&policy).expect("test policy compiles");
        let mut capacity = Capacity::for_test_run(&compiled.image, compiled.rules.len());
        if let Some(sessions) = sessions {
            capacity.sessions = sessions;
        }
        let mut enforcer = Enforcer::load(capacity, None)
            .unwrap_or_else(|e| panic!("loading the XDP program failed (are you root?): {e:?}"));
        let generation = enforcer
            .apply(&compiled.image)
            .expect("writing the maps")
            .generation;
        for &(ifindex, flags) in ifaces {
            enforcer.set_iface(ifindex, flags).expect("writing IFACES");
        }
        let reference = Reference::new(
            &compiled.image,
            generation,
            ifaces.iter().copied().collect::<HashMap<_, _>>(),
        );
        Self {
            enforcer,
            reference,
            policy,
            compiled,
        }
    }

    /// Run one frame through the kernel program; returns the XDP action.
    ///
    /// # Panics
    /// If BPF_PROG_TEST_RUN fails.
    pub fn run(&mut self, frame: &[u8]) -> u32 {
        self.enforcer
            .test_run(frame, 1, TEST_IFINDEX)
            .expect("BPF_PROG_TEST_RUN")
            .0
    }

    /// Packets counted so far for `verdict` in the block of `sim`'s segment (or no segment).
    #[must_use]
    pub fn verdict_packets(&self, sim: Option<SimEntry>, verdict: Verdict) -> u64 {
        let block = sim.map_or(SEGMENT_NONE, |s| u32::from(s.segment));
        let map = self
            .enforcer
            .map(names::VERDICT_STATS)
            .expect("VERDICT_STATS");
        counters::verdict(map, block, verdict)
            .expect("reading VERDICT_STATS")
            .packets
    }

    /// Run `frame` through the kernel and the reference; assert the same action, and that the
    /// kernel counted it under the reference's verdict, SIM and rule. Returns the outcome.
    ///
    /// # Panics
    /// On any disagreement, printing the frame.
    pub fn check(&mut self, frame: &[u8]) -> Outcome {
        let expected = self.reference.evaluate(frame, TEST_IFINDEX);
        let verdict_before = self.verdict_packets(expected.sim, expected.verdict);
        let sim_before = expected.sim.map(|s| self.sim(s.sim));
        let rule_before = self.rule_of(expected.verdict).map(|r| self.rule(r));
        let action = self.run(frame);
        let context = || format!("frame {}\nexpected {expected:?}", hex(frame));
        assert_eq!(
            action,
            expected.verdict.xdp_action(),
            "XDP action differs; {}",
            context()
        );
        assert_eq!(
            self.verdict_packets(expected.sim, expected.verdict),
            verdict_before + 1,
            "the kernel did not count the expected verdict; {}",
            context()
        );
        if let (Some(sim), Some(before)) = (expected.sim, sim_before) {
            let after = self.sim(sim.sim);
            let (passed, dropped) = match expected.verdict {
                Verdict::Pass(..) => (1, 0),
                Verdict::Drop(_) => (0, 1),
            };
            assert_eq!(
                (
                    after.pass_packets - before.pass_packets,
                    after.drop_packets - before.drop_packets
                ),
                (passed, dropped),
                "SIM counters moved wrongly; {}",
                context()
            );
            let bytes = frame.len() as u64;
            assert_eq!(
                after.pass_bytes + after.drop_bytes - before.pass_bytes - before.drop_bytes,
                bytes,
                "SIM byte counters moved wrongly; {}",
                context()
            );
        }
        if let (Some(rule), Some(before)) = (self.rule_of(expected.verdict), rule_before) {
            assert_eq!(
                self.rule(rule) - before,
                1,
                "rule counter did not move; {}",
                context()
            );
        }
        expected
    }

    /// Apply `text` to the running program (a generation flip, as a reload) and move the
    /// model on with it: its sessions stay and its epoch advances, as the program's do.
    ///
    /// # Panics
    /// If the policy is invalid or cannot be applied.
    pub fn reload(&mut self, text: &str) {
        let policy = policy::from_str(Path::new("b.toml"), text).expect("valid");
        let compiled = compile::compile_fresh(&policy).expect("compiles");
        let generation = self
            .enforcer
            .apply(&compiled.image)
            .expect("apply")
            .generation;
        let old = std::mem::replace(
            &mut self.reference,
            Reference::new(&compiled.image, generation, HashMap::new()),
        );
        self.reference = old.reloaded(&compiled.image, generation);
        self.policy = policy;
        self.compiled = compiled;
    }

    /// The kernel's session table, asserted equal to the model's: every session with its
    /// (SIM, rule, state, flags, packets each way, bytes each way), sorted by key.
    ///
    /// # Panics
    /// If the tables differ or `SESSIONS` cannot be read.
    #[must_use]
    pub fn sessions_agree(&self) -> Vec<(SessionKey, SessionFields)> {
        let strip = |s: &Session| (s.sim, s.rule, s.state, s.flags, s.packets, s.bytes);
        let mut kernel: Vec<_> = self
            .enforcer
            .sessions()
            .expect("read SESSIONS")
            .iter()
            .map(|(k, s)| (*k, strip(s)))
            .collect();
        let mut model: Vec<_> = self
            .reference
            .sessions()
            .table
            .iter()
            .map(|(k, s)| (*k, strip(s)))
            .collect();
        kernel.sort_unstable();
        model.sort_unstable();
        assert_eq!(
            kernel, model,
            "the kernel's sessions differ from the model's"
        );
        kernel
    }

    fn rule_of(&self, verdict: Verdict) -> Option<u32> {
        match verdict {
            Verdict::Pass(PassReason::Rule | PassReason::Inbound, rule) => Some(rule),
            _ => None,
        }
    }

    /// One SIM's counters.
    #[must_use]
    pub fn sim(&self, sim: u32) -> enforcer_common::maps::SimCounters {
        self.enforcer.sim_table().counters(sim)
    }

    fn rule(&self, rule: u32) -> u64 {
        counters::rule(
            self.enforcer.map(names::RULE_STATS).expect("RULE_STATS"),
            rule,
        )
        .expect("reading RULE_STATS")
        .packets
    }

    /// SIM entry of an IMSI.
    ///
    /// # Panics
    /// If the IMSI is not in the policy.
    #[must_use]
    pub fn sim_of(&self, imsi: &str) -> u32 {
        let index = self
            .policy
            .sims
            .iter()
            .position(|s| s.imsi == imsi)
            .expect("IMSI in the test policy");
        u32::try_from(index).expect("SIM index fits u32")
    }
}

/// Hex dump of a frame for failure messages.
#[must_use]
pub fn hex(frame: &[u8]) -> String {
    frame.iter().map(|b| format!("{b:02x}")).collect::<String>()
}

/// One `BPF_PROG_TEST_RUN` of `frame` on a program opened from its pin (`Xdp::from_pin`), as
/// arriving on [`TEST_IFINDEX`]: the XDP action.
///
/// # Panics
/// When the kernel refuses the run.
#[must_use]
pub fn run_pinned(program: &aya::programs::Xdp, frame: &[u8]) -> u32 {
    use aya::programs::{TestRun as _, TestRunOptions};
    let mut ctx = [0u8; 24];
    let len = u32::try_from(frame.len()).expect("small frame");
    ctx[4..8].copy_from_slice(&len.to_ne_bytes());
    ctx[12..16].copy_from_slice(&TEST_IFINDEX.to_ne_bytes());
    let mut opts = TestRunOptions::new();
    opts.data_in = Some(frame);
    opts.ctx_in = Some(&ctx);
    opts.repeat = 1;
    program
        .test_run(opts)
        .expect("BPF_PROG_TEST_RUN")
        .return_value
}
