//! The only module that talks to the kernel: loads the XDP object, sizes and pins its maps,
//! writes a [`MapImage`] make-before-break, attaches to interfaces and runs test packets.

use std::{
    collections::HashSet,
    os::fd::{AsFd as _, AsRawFd as _},
    path::{Path, PathBuf},
    time::Duration,
};

use aya::{
    Ebpf, EbpfLoader, Pod,
    maps::{Array, HashMap, LpmTrie, Map, MapData, lpm_trie::Key},
    programs::{ProgramError, TestRun, TestRunOptions, Xdp, XdpMode, xdp::XdpLinkId},
};
use enforcer_common::maps::{
    Config, GENERATIONS, IPPROTO_UDP, IfaceEntry, MAX_SEGMENTS, NetEntry, PORT_WORDS, PortRuleKey,
    RULE_KEY_LEN, RuleEntry, SIM_QUARANTINED, SegmentEntry, SimEntry, SimKeyV4, SimKeyV6, names,
    ports_used_index, segment_index,
};

pub use crate::capacity::Capacity;
use crate::{batch, capacity::CapacityError, compile::MapImage};

/// The XDP object built by `build.rs`.
static PROGRAM: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/enforcer"));

/// The XDP object, for tools that load its benchmark programs with their own globals.
#[must_use]
pub fn object() -> &'static [u8] {
    PROGRAM
}
/// Name of the XDP function in the object.
const PROGRAM_NAME: &str = "enforcer";
/// Name of the empty XDP program in the object, the benchmarks' floor.
const BASELINE_NAME: &str = "xdp_pass";

/// Errors of loading, filling and attaching.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The object or a map could not be created.
    #[error(
        "loading the eBPF object failed; run as root (CAP_BPF, CAP_NET_ADMIN) on a kernel with \
         BPF and BTF, and check that {pin_dir} is on a bpffs mount"
    )]
    Object {
        /// Pin directory in use, or `(no pins)`.
        pin_dir: String,
        /// Cause.
        #[source]
        source: Box<aya::EbpfError>,
    },
    /// The verifier rejected the program.
    #[error("the kernel verifier rejected the XDP program; end of its log:\n{log_tail}")]
    Verifier {
        /// Last lines of the verifier log.
        log_tail: String,
        /// Cause.
        #[source]
        source: Box<ProgramError>,
    },
    /// Some other program operation failed.
    #[error("{what} failed")]
    Program {
        /// What was being done.
        what: String,
        /// Cause.
        #[source]
        source: Box<ProgramError>,
    },
    /// A map operation failed.
    #[error("{what} on map {map} failed; is the map large enough (see --max-sims)?")]
    Map {
        /// Map name.
        map: &'static str,
        /// What was being done.
        what: &'static str,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// Attaching failed.
    #[error("attaching XDP to `{iface}` in {mode:?} mode failed{hint}")]
    Attach {
        /// Interface name.
        iface: String,
        /// Mode requested.
        mode: XdpMode,
        /// What to try, from [`crate::xdp_holder::attach_hint`] (empty or `; …`).
        hint: String,
        /// Cause.
        #[source]
        source: Box<ProgramError>,
    },
    /// A map pinned by an earlier run does not fit what this build and capacity need.
    #[error(
        "the map {map} pinned in {dir} does not fit this start: {what}. It was made by another \
         build or with smaller capacities; start with the capacities it was made with, or stop \
         every enforcer using {dir} and remove that directory (its counters are lost)"
    )]
    PinMismatch {
        /// Map name.
        map: &'static str,
        /// Pin directory.
        dir: String,
        /// What differs.
        what: String,
    },
    /// The interface does not exist.
    #[error("no network interface named `{0}`; check `ip link`")]
    NoSuchInterface(String),
    /// The image does not fit the maps as sized.
    #[error(transparent)]
    Capacity(#[from] CapacityError),
}

fn map_err(map: &'static str, what: &'static str) -> impl FnOnce(aya::maps::MapError) -> LoadError {
    move |source| LoadError::Map {
        map,
        what,
        source: std::io::Error::other(source),
    }
}

/// The maps whose size is chosen at load time, with the size `capacity` gives them; every other
/// map keeps the size written in the object.
fn sized_maps(capacity: &Capacity) -> [(&'static str, u32); 8] {
    [
        (names::SIM_V4, capacity.sim_v4),
        (names::SIM_V6, capacity.sim_v6),
        (names::SIM_STATS, capacity.sims),
        (names::NET_V4, capacity.nets_v4),
        (names::NET_V6, capacity.nets_v6),
        (names::RULES, capacity.rule_entries),
        (names::PORT_RULES, capacity.port_rules),
        (names::RULE_STATS, capacity.rules),
    ]
}

/// Check every map already pinned in `dir` against the one this build would create with
/// `capacity` (from the object's own map definitions): the same map type, key size, value size
/// and flags, and at least as many entries. A pin from an older layout or a smaller run is
/// refused before anything is loaded, rather than reused to fail half-way through a policy.
/// A layout change that keeps the sizes (fields reordered) is caught by the map's name: the
/// convention is that any key or value change renames the map (`RULES_V2`, `VERDICTS_V2`), so
/// an old pin is never opened under the new layout.
///
/// # Errors
/// [`LoadError::PinMismatch`] naming the map and what differs.
pub fn check_pins(dir: &Path, capacity: &Capacity) -> Result<(), LoadError> {
    let object = aya_obj::Object::parse(PROGRAM).map_err(|source| LoadError::Object {
        pin_dir: dir.display().to_string(),
        source: Box::new(aya::EbpfError::ParseError(source)),
    })?;
    let sized = sized_maps(capacity);
    for name in names::ALL {
        let path = dir.join(name);
        if !path.exists() {
            continue;
        }
        let Some(def) = object.maps.get(name) else {
            continue;
        };
        let needed = sized
            .iter()
            .find(|(n, _)| *n == name)
            .map_or(def.max_entries(), |&(_, entries)| entries);
        let mismatch = |what: String| LoadError::PinMismatch {
            map: name,
            dir: dir.display().to_string(),
            what,
        };
        let info = aya::maps::MapData::from_pin(&path)
            .and_then(|map| map.info())
            .map_err(|e| mismatch(format!("it cannot be read ({e})")))?;
        let pinned_type = info.map_type().map_or(u32::MAX, |t| t as u32);
        if pinned_type != def.map_type() {
            return Err(mismatch(format!(
                "it is a map of type {pinned_type}, this build needs type {}",
                def.map_type()
            )));
        }
        if (info.key_size(), info.value_size()) != (def.key_size(), def.value_size()) {
            return Err(mismatch(format!(
                "its keys and values are {} and {} bytes, this build needs {} and {}",
                info.key_size(),
                info.value_size(),
                def.key_size(),
                def.value_size()
            )));
        }
        if info.map_flags() != def.map_flags() {
            return Err(mismatch(format!(
                "its flags are {:#x}, this build needs {:#x}",
                info.map_flags(),
                def.map_flags()
            )));
        }
        if info.max_entries() < needed {
            return Err(mismatch(format!(
                "it holds {} entries, this start needs {needed}",
                info.max_entries()
            )));
        }
    }
    Ok(())
}

/// A loaded (not necessarily attached) enforcer program and its maps.
pub struct Enforcer {
    ebpf: Ebpf,
    capacity: Capacity,
    pin_dir: Option<PathBuf>,
    links: Vec<(String, XdpLinkId)>,
}

impl Enforcer {
    /// Load the object with maps sized by `capacity`; with `pin_dir`, every map is pinned there
    /// (and reused if already pinned, so counters survive a daemon restart).
    pub fn load(capacity: Capacity, pin_dir: Option<&Path>) -> Result<Self, LoadError> {
        if let Some(dir) = pin_dir {
            check_pins(dir, &capacity)?;
        }
        let mut loader = EbpfLoader::new();
        for (name, entries) in sized_maps(&capacity) {
            loader.map_max_entries(name, entries);
        }
        if let Some(dir) = pin_dir {
            for name in names::ALL {
                loader.map_pin_path(name, dir.join(name));
            }
        }
        let mut ebpf = loader.load(PROGRAM).map_err(|source| LoadError::Object {
            pin_dir: pin_dir.map_or_else(|| "(no pins)".to_owned(), |d| d.display().to_string()),
            source: Box::new(source),
        })?;
        let program = xdp(&mut ebpf)?;
        program.load().map_err(|source| match source {
            ProgramError::LoadError {
                ref verifier_log, ..
            } => {
                let log = verifier_log.to_string();
                let tail: Vec<&str> = log.lines().rev().take(25).collect();
                LoadError::Verifier {
                    log_tail: tail.into_iter().rev().collect::<Vec<_>>().join("\n"),
                    source: Box::new(source),
                }
            }
            source => LoadError::Program {
                what: "loading the XDP program".into(),
                source: Box::new(source),
            },
        })?;
        Ok(Self {
            ebpf,
            capacity,
            pin_dir: pin_dir.map(Path::to_owned),
            links: Vec::new(),
        })
    }

    /// The XDP program (loaded), for attaching through pinned links (`crate::links`).
    pub fn program(&mut self) -> Result<&mut Xdp, LoadError> {
        xdp(&mut self.ebpf)
    }

    /// Map sizes in use.
    #[must_use]
    pub fn capacity(&self) -> Capacity {
        self.capacity
    }

    /// Instructions the verifier processed when loading the program.
    pub fn verified_instructions(&mut self) -> Option<u32> {
        let program = xdp(&mut self.ebpf).ok()?;
        program.info().ok()?.verified_instruction_count()
    }

    /// The map named `name` (one of `enforcer_common::maps::names`).
    pub fn map(&self, name: &str) -> Option<&Map> {
        self.ebpf.map(name)
    }

    /// Kernel memory of every map, as the kernel accounts it (`memlock` in the map's fdinfo),
    /// in bytes, by map name.
    pub fn map_memory(&self) -> Vec<(&'static str, u64)> {
        names::ALL
            .iter()
            .filter_map(|&name| {
                let fd = self.map_data(name).ok()?.fd().as_fd().as_raw_fd();
                let info = std::fs::read_to_string(format!("/proc/self/fdinfo/{fd}")).ok()?;
                let bytes = info
                    .lines()
                    .find_map(|line| line.strip_prefix("memlock:"))
                    .and_then(|value| value.trim().parse().ok())?;
                Some((name, bytes))
            })
            .collect()
    }

    /// The active policy generation.
    pub fn generation(&self) -> Result<u8, LoadError> {
        let config: Array<&MapData, Config> = Array::try_from(self.map_ref(names::CONFIG)?)
            .map_err(map_err(names::CONFIG, "opening"))?;
        let config = config
            .get(&0, 0)
            .map_err(map_err(names::CONFIG, "reading"))?;
        Ok((config.generation & 1) as u8)
    }

    fn map_ref(&self, name: &'static str) -> Result<&Map, LoadError> {
        self.ebpf.map(name).ok_or(LoadError::Map {
            map: name,
            what: "finding",
            source: std::io::Error::other("the object has no such map"),
        })
    }

    fn map_mut(&mut self, name: &'static str) -> Result<&mut Map, LoadError> {
        self.ebpf.map_mut(name).ok_or(LoadError::Map {
            map: name,
            what: "finding",
            source: std::io::Error::other("the object has no such map"),
        })
    }

    /// Write `image` make-before-break: fill the inactive generation, update the SIMs in place,
    /// flip `CONFIG`, then clear the old generation. Returns the new active generation.
    pub fn apply(&mut self, image: &MapImage) -> Result<u8, LoadError> {
        self.capacity.check(image, 0)?;
        let active = self.generation()?;
        let target = active ^ 1;

        self.write_nets(image, target)?;
        self.write_segments(image, target)?;
        self.write_ports_used(image, target)?;
        self.write_rules(image, target)?;
        self.write_sims(image)?;

        let mut config: Array<&mut MapData, Config> = Array::try_from(self.map_mut(names::CONFIG)?)
            .map_err(map_err(names::CONFIG, "opening"))?;
        config
            .set(
                0,
                Config {
                    generation: u32::from(target),
                    _pad: 0,
                },
                0,
            )
            .map_err(map_err(names::CONFIG, "flipping the generation"))?;

        self.clear_nets(active)?;
        self.clear_rules(active)?;
        Ok(target)
    }

    fn write_nets(&mut self, image: &MapImage, generation: u8) -> Result<(), LoadError> {
        self.clear_nets(generation)?;
        let v4 = image
            .nets_v4
            .iter()
            .map(|n| (&n.addr[..], n.prefix_len, n.entry));
        self.insert_nets::<5>(names::NET_V4, generation, v4)?;
        let v6 = image
            .nets_v6
            .iter()
            .map(|n| (&n.addr[..], n.prefix_len, n.entry));
        self.insert_nets::<17>(names::NET_V6, generation, v6)
    }

    /// Insert `(address, prefix length, entry)` into the LPM map `name` as generation
    /// `generation`; `K` is the key's data length: one generation byte plus the address.
    fn insert_nets<'a, const K: usize>(
        &mut self,
        name: &'static str,
        generation: u8,
        nets: impl Iterator<Item = (&'a [u8], u8, NetEntry)>,
    ) -> Result<(), LoadError> {
        let mut trie: LpmTrie<&mut MapData, [u8; K], NetEntry> =
            LpmTrie::try_from(self.map_mut(name)?).map_err(map_err(name, "opening"))?;
        for (addr, prefix_len, entry) in nets {
            let mut data = [0u8; K];
            data[0] = generation;
            data[1..].copy_from_slice(addr);
            trie.insert(&Key::new(8 + u32::from(prefix_len), data), entry, 0)
                .map_err(map_err(name, "inserting"))?;
        }
        Ok(())
    }

    fn clear_nets(&mut self, generation: u8) -> Result<(), LoadError> {
        self.clear_lpm::<5, NetEntry>(names::NET_V4, generation)?;
        self.clear_lpm::<17, NetEntry>(names::NET_V6, generation)
    }

    /// Remove every entry of generation `generation` from the LPM map `name`.
    fn clear_lpm<const K: usize, V: Pod>(
        &mut self,
        name: &'static str,
        generation: u8,
    ) -> Result<(), LoadError> {
        let mut trie: LpmTrie<&mut MapData, [u8; K], V> =
            LpmTrie::try_from(self.map_mut(name)?).map_err(map_err(name, "opening"))?;
        let stale: Vec<Key<[u8; K]>> = trie
            .keys()
            .filter_map(Result::ok)
            .filter(|key| key.data()[0] == generation)
            .collect();
        for key in &stale {
            trie.remove(key).map_err(map_err(name, "clearing"))?;
        }
        Ok(())
    }

    fn write_segments(&mut self, image: &MapImage, generation: u8) -> Result<(), LoadError> {
        let entries: Vec<(u32, SegmentEntry)> = (0..MAX_SEGMENTS)
            .map(|id| {
                let entry = image.segments.get(id as usize).copied().unwrap_or_default();
                (segment_index(generation, id as u16), entry)
            })
            .collect();
        self.batch_write(names::SEGMENTS, &entries)
    }

    /// The whole `PORTS_USED` block of `generation`, so bits of an older policy are cleared.
    fn write_ports_used(&mut self, image: &MapImage, generation: u8) -> Result<(), LoadError> {
        let mut words = vec![0u64; 2 * PORT_WORDS as usize];
        for (key, _) in image.single_port_rules(true) {
            let udp = key.proto == IPPROTO_UDP;
            let word = (usize::from(udp) * PORT_WORDS as usize) + usize::from(key.port >> 6);
            words[word] |= 1 << (key.port & 63);
        }
        let entries: Vec<(u32, u64)> = words
            .into_iter()
            .enumerate()
            .map(|(i, word)| {
                let udp = i >= PORT_WORDS as usize;
                let port = u16::try_from((i % PORT_WORDS as usize) << 6).unwrap_or(0);
                (ports_used_index(generation, udp, port), word)
            })
            .collect();
        self.batch_write(names::PORTS_USED, &entries)
    }

    fn write_rules(&mut self, image: &MapImage, generation: u8) -> Result<(), LoadError> {
        self.clear_rules(generation)?;
        let single: Vec<(PortRuleKey, RuleEntry)> = image
            .single_port_rules(true)
            .map(|(key, entry)| (PortRuleKey::of(key, generation), *entry))
            .collect();
        self.batch_write(names::PORT_RULES, &single)?;
        let entries: Vec<(Key<[u8; RULE_KEY_LEN]>, RuleEntry)> = image
            .single_port_rules(false)
            .map(|(key, entry)| (Key::new(key.prefix_len(), key.lpm_data(generation)), *entry))
            .collect();
        if self.batch_write(names::RULES, &entries).is_ok() {
            return Ok(());
        }
        // Kernels without batch updates for LPM tries: one syscall per entry.
        let mut trie: LpmTrie<&mut MapData, [u8; RULE_KEY_LEN], RuleEntry> =
            LpmTrie::try_from(self.map_mut(names::RULES)?)
                .map_err(map_err(names::RULES, "opening"))?;
        for (key, entry) in &entries {
            trie.insert(key, *entry, 0)
                .map_err(map_err(names::RULES, "inserting"))?;
        }
        Ok(())
    }

    fn clear_rules(&mut self, generation: u8) -> Result<(), LoadError> {
        let mut single: HashMap<&mut MapData, PortRuleKey, RuleEntry> =
            HashMap::try_from(self.map_mut(names::PORT_RULES)?)
                .map_err(map_err(names::PORT_RULES, "opening"))?;
        let stale: Vec<PortRuleKey> = single
            .keys()
            .filter_map(Result::ok)
            .filter(|key| key.generation == generation)
            .collect();
        for key in &stale {
            single
                .remove(key)
                .map_err(map_err(names::PORT_RULES, "clearing"))?;
        }
        self.clear_lpm::<RULE_KEY_LEN, RuleEntry>(names::RULES, generation)
    }

    fn write_sims(&mut self, image: &MapImage) -> Result<(), LoadError> {
        self.write_sim_map(names::SIM_V4, &image.sims_v4)?;
        self.write_sim_map(names::SIM_V6, &image.sims_v6)
    }

    /// Upsert every SIM in one batch; then, only if the map held entries before (pinned maps
    /// reused after a restart), remove the SIMs the policy no longer has. A fresh map has none,
    /// and scanning a million keys one syscall at a time costs about a second.
    fn write_sim_map<K: Pod + Eq + std::hash::Hash>(
        &mut self,
        name: &'static str,
        entries: &[(K, SimEntry)],
    ) -> Result<(), LoadError> {
        let had_entries = {
            let map: HashMap<&MapData, K, SimEntry> =
                HashMap::try_from(self.map_ref(name)?).map_err(map_err(name, "opening"))?;
            map.keys().next().is_some()
        };
        self.batch_write(name, entries)?;
        if had_entries {
            let keep: HashSet<K> = entries.iter().map(|(k, _)| *k).collect();
            let mut map: HashMap<&mut MapData, K, SimEntry> =
                HashMap::try_from(self.map_mut(name)?).map_err(map_err(name, "opening"))?;
            let stale: Vec<K> = map
                .keys()
                .filter_map(Result::ok)
                .filter(|k| !keep.contains(k))
                .collect();
            for key in &stale {
                map.remove(key).map_err(map_err(name, "clearing"))?;
            }
        }
        Ok(())
    }

    /// Write `entries` into map `name` with `BPF_MAP_UPDATE_BATCH`.
    fn batch_write<K: Pod, V: Pod>(
        &self,
        name: &'static str,
        entries: &[(K, V)],
    ) -> Result<(), LoadError> {
        batch::update(self.map_data(name)?.fd(), entries).map_err(|source| LoadError::Map {
            map: name,
            what: "writing",
            source,
        })
    }

    fn map_data(&self, name: &'static str) -> Result<&MapData, LoadError> {
        match self.map_ref(name)? {
            Map::Array(data) | Map::HashMap(data) | Map::LpmTrie(data) | Map::PerCpuArray(data) => {
                Ok(data)
            }
            _ => Err(LoadError::Map {
                map: name,
                what: "opening",
                source: std::io::Error::other("unexpected map type"),
            }),
        }
    }

    /// Set the `IFACE_*` flags of interface `ifindex`.
    pub fn set_iface(&mut self, ifindex: u32, flags: u32) -> Result<(), LoadError> {
        let mut ifaces: HashMap<&mut MapData, u32, IfaceEntry> =
            HashMap::try_from(self.map_mut(names::IFACES)?)
                .map_err(map_err(names::IFACES, "opening"))?;
        ifaces
            .insert(ifindex, IfaceEntry { flags }, 0)
            .map_err(map_err(names::IFACES, "writing"))
    }

    /// Attach the program to `iface`.
    pub fn attach(&mut self, iface: &str, mode: XdpMode) -> Result<(), LoadError> {
        let program = xdp(&mut self.ebpf)?;
        let link = program.attach(iface, mode).map_err(|source| match source {
            ProgramError::UnknownInterface { .. } => LoadError::NoSuchInterface(iface.to_owned()),
            source => LoadError::Attach {
                iface: iface.to_owned(),
                mode,
                hint: crate::xdp_holder::attach_hint(iface, mode),
                source: Box::new(source),
            },
        })?;
        self.links.push((iface.to_owned(), link));
        Ok(())
    }

    /// Load and attach another program of the object (a benchmark program such as `xdp_bare`,
    /// which shares this instance's maps) to `iface`.
    pub fn attach_program(
        &mut self,
        name: &str,
        iface: &str,
        mode: XdpMode,
    ) -> Result<(), LoadError> {
        self.extra_program(name)?
            .attach(iface, mode)
            .map_err(|source| LoadError::Attach {
                iface: iface.to_owned(),
                mode,
                hint: crate::xdp_holder::attach_hint(iface, mode),
                source: Box::new(source),
            })?;
        Ok(())
    }

    /// Another XDP program of the object by name, loaded on first use.
    fn extra_program(&mut self, name: &str) -> Result<&mut Xdp, LoadError> {
        let program: &mut Xdp = self
            .ebpf
            .program_mut(name)
            .ok_or_else(|| LoadError::Program {
                what: format!("finding program `{name}` in the object"),
                source: Box::new(ProgramError::NotLoaded),
            })?
            .try_into()
            .map_err(|source| LoadError::Program {
                what: format!("opening program `{name}`"),
                source: Box::new(source),
            })?;
        if program.fd().is_err() {
            program.load().map_err(|source| LoadError::Program {
                what: format!("loading program `{name}`"),
                source: Box::new(source),
            })?;
        }
        Ok(program)
    }

    /// Detach from every interface.
    pub fn detach_all(&mut self) -> Result<(), LoadError> {
        let links = std::mem::take(&mut self.links);
        let program = xdp(&mut self.ebpf)?;
        for (iface, link) in links {
            program.detach(link).map_err(|source| LoadError::Program {
                what: format!("detaching from `{iface}`"),
                source: Box::new(source),
            })?;
        }
        Ok(())
    }

    /// Remove the pins (the maps live on while the program holds them).
    pub fn unpin(&self) -> std::io::Result<()> {
        if let Some(dir) = &self.pin_dir {
            for name in names::ALL {
                match std::fs::remove_file(dir.join(name)) {
                    Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
                    _ => {}
                }
            }
            match std::fs::remove_dir(dir) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
                _ => {}
            }
        }
        Ok(())
    }

    /// Set or clear `SIM_QUARANTINED` on the SIM entries at `v4` and `v6` (the addresses of one
    /// SIM): each entry is read and replaced with one map update, which the program sees
    /// atomically (a hash map update swaps in a new element). Returns the entries changed.
    pub fn set_sim_quarantine(
        &mut self,
        v4: Option<SimKeyV4>,
        v6: Option<SimKeyV6>,
        quarantined: bool,
    ) -> Result<usize, LoadError> {
        fn one<K: Pod>(
            map: &mut Map,
            name: &'static str,
            key: K,
            quarantined: bool,
        ) -> Result<usize, LoadError> {
            let mut map: HashMap<&mut MapData, K, SimEntry> =
                HashMap::try_from(map).map_err(map_err(name, "opening"))?;
            let Ok(mut entry) = map.get(&key, 0) else {
                return Ok(0);
            };
            if quarantined {
                entry.flags |= SIM_QUARANTINED;
            } else {
                entry.flags &= !SIM_QUARANTINED;
            }
            map.insert(key, entry, 0)
                .map_err(map_err(name, "writing"))?;
            Ok(1)
        }
        let mut changed = 0;
        if let Some(key) = v4 {
            changed += one(
                self.map_mut(names::SIM_V4)?,
                names::SIM_V4,
                key,
                quarantined,
            )?;
        }
        if let Some(key) = v6 {
            changed += one(
                self.map_mut(names::SIM_V6)?,
                names::SIM_V6,
                key,
                quarantined,
            )?;
        }
        Ok(changed)
    }

    /// Run `frame` through the program `repeat` times with `BPF_PROG_TEST_RUN`; returns the
    /// XDP action and the kernel-measured time per run. `ifindex` sets `xdp_md.ingress_ifindex`
    /// (it must exist in the current namespace; 1 is loopback).
    pub fn test_run(
        &mut self,
        frame: &[u8],
        repeat: u32,
        ifindex: u32,
    ) -> Result<(u32, Duration), LoadError> {
        let program = xdp(&mut self.ebpf)?;
        // struct xdp_md { data, data_end, data_meta, ingress_ifindex, rx_queue_index,
        // egress_ifindex }: data and data_end are offsets; data_end must be the frame length.
        let mut ctx = [0u8; 24];
        let len = u32::try_from(frame.len()).unwrap_or(u32::MAX);
        ctx[4..8].copy_from_slice(&len.to_ne_bytes());
        ctx[12..16].copy_from_slice(&ifindex.to_ne_bytes());
        let mut opts = TestRunOptions::new();
        opts.data_in = Some(frame);
        opts.ctx_in = Some(&ctx);
        opts.repeat = repeat;
        let result = program
            .test_run(opts)
            .map_err(|source| LoadError::Program {
                what: "BPF_PROG_TEST_RUN".into(),
                source: Box::new(source),
            })?;
        Ok((result.return_value, result.duration))
    }

    /// Like [`Enforcer::test_run`], for the empty program in the same object (loaded on first
    /// use): the cost of BPF_PROG_TEST_RUN itself, measured beside the enforcer.
    pub fn baseline_test_run(
        &mut self,
        frame: &[u8],
        repeat: u32,
    ) -> Result<(u32, Duration), LoadError> {
        let program = self.extra_program(BASELINE_NAME)?;
        let mut opts = TestRunOptions::new();
        opts.data_in = Some(frame);
        opts.repeat = repeat;
        let result = program
            .test_run(opts)
            .map_err(|source| LoadError::Program {
                what: "BPF_PROG_TEST_RUN (baseline)".into(),
                source: Box::new(source),
            })?;
        Ok((result.return_value, result.duration))
    }
}

const _: () = assert!(
    GENERATIONS == 2,
    "apply() flips between exactly two generations"
);

fn xdp(ebpf: &mut Ebpf) -> Result<&mut Xdp, LoadError> {
    let program = ebpf
        .program_mut(PROGRAM_NAME)
        .ok_or_else(|| LoadError::Program {
            what: format!("finding program `{PROGRAM_NAME}` in the object"),
            source: Box::new(ProgramError::NotLoaded),
        })?;
    program.try_into().map_err(|source| LoadError::Program {
        what: "opening the XDP program".into(),
        source: Box::new(source),
    })
}
