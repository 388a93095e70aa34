//! The floor programs (`bench/bpf/floors.c`): loading them and keeping their
//! maps in the same state as berth's.

use std::collections::BTreeSet;

use anyhow::Context;
use aya::{
    Ebpf, EbpfLoader,
    maps::{HashMap, MapData},
    programs::Xdp,
};
use berth_ebpf::abi::{berth_ct_key, berth_ct_value, berth_service_key, berth_service_value};

fn object() -> &'static [u8] {
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/floors.o"))
}

/// One floor program.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Floor {
    Pass,
    Lookup,
    LruHit,
    LruInsert,
    /// Not a floor: the insert floor with a second insert (berth's shape of
    /// a new flow), to show what the second conntrack entry costs.
    LruInsert2,
}

impl Floor {
    pub const ALL: [Floor; 5] = [Floor::Pass, Floor::Lookup, Floor::LruHit, Floor::LruInsert, Floor::LruInsert2];

    pub fn program(self) -> &'static str {
        match self {
            Floor::Pass => "floor_pass",
            Floor::Lookup => "floor_lookup",
            Floor::LruHit => "floor_lru_hit",
            Floor::LruInsert => "floor_lru_insert",
            Floor::LruInsert2 => "diag_lru_insert2",
        }
    }

    /// The peer name in the results.
    pub fn peer(self) -> &'static str {
        match self {
            Floor::Pass => "floor-pass",
            Floor::Lookup => "floor-lookup",
            Floor::LruHit => "floor-lru-hit",
            Floor::LruInsert => "floor-lru-insert",
            Floor::LruInsert2 => "diag-2-lru-inserts",
        }
    }

    pub fn describe(self) -> &'static str {
        match self {
            Floor::Pass => "XDP_PASS",
            Floor::Lookup => "parse + lookup + XDP_TX",
            Floor::LruHit => "+ LRU hit",
            Floor::LruInsert => "+ LRU insert",
            Floor::LruInsert2 => "+ 2 LRU inserts (diagnostic, not a floor)",
        }
    }
}

type ServiceMap = HashMap<MapData, berth_service_key, berth_service_value>;
pub type CtMap = HashMap<MapData, berth_ct_key, berth_ct_value>;

/// The loaded floors and their two maps.
pub struct Floors {
    ebpf: Ebpf,
    services: ServiceMap,
    pub ct: CtMap,
    /// What `services` holds, so a change writes only the difference.
    present: BTreeSet<[u8; 8]>,
}

fn key_bytes(k: &berth_service_key) -> [u8; 8] {
    let mut b = [0u8; 8];
    b[..4].copy_from_slice(&k.vip.to_ne_bytes());
    b[4..6].copy_from_slice(&k.port.to_ne_bytes());
    b[6] = k.proto;
    b
}

impl Floors {
    /// Loads and verifies the programs with the Service map sized
    /// `services` and the LRU sized `conntrack` (berth's limits).
    ///
    /// # Errors
    /// A load or verifier failure.
    pub fn load(services: u32, conntrack: u32) -> anyhow::Result<Self> {
        let mut ebpf = EbpfLoader::new()
            .map_max_entries("floor_services", services)
            .map_max_entries("floor_ct", conntrack)
            .load(object())
            .context("loading bench/bpf/floors.c")?;
        for floor in Floor::ALL {
            let prog: &mut Xdp = ebpf
                .program_mut(floor.program())
                .with_context(|| format!("{} missing from floors.o", floor.program()))?
                .try_into()
                .with_context(|| format!("{} is not an XDP program", floor.program()))?;
            prog.load().with_context(|| format!("verifying {}", floor.program()))?;
        }
        let services = ServiceMap::try_from(ebpf.take_map("floor_services").context("floor_services missing")?)?;
        let ct = CtMap::try_from(ebpf.take_map("floor_ct").context("floor_ct missing")?)?;
        Ok(Self { ebpf, services, ct, present: BTreeSet::new() })
    }

    /// # Errors
    /// If the program is missing (cannot happen after [`Floors::load`]).
    pub fn program(&self, floor: Floor) -> anyhow::Result<&Xdp> {
        Ok(self.ebpf.program(floor.program()).with_context(|| format!("{} missing", floor.program()))?.try_into()?)
    }

    /// Makes the Service map hold exactly `keys` (value: the index as id).
    ///
    /// # Errors
    /// A failed map write.
    pub fn set_services(&mut self, keys: &[berth_service_key]) -> anyhow::Result<()> {
        let wanted: BTreeSet<[u8; 8]> = keys.iter().map(key_bytes).collect();
        let stale: Vec<berth_service_key> = self
            .services
            .keys()
            .collect::<Result<Vec<_>, _>>()
            .context("listing floor_services")?
            .into_iter()
            .filter(|k| !wanted.contains(&key_bytes(k)))
            .collect();
        for k in &stale {
            self.services.remove(k).context("floor_services: delete")?;
            self.present.remove(&key_bytes(k));
        }
        for (i, k) in keys.iter().enumerate() {
            if self.present.insert(key_bytes(k)) {
                let value = berth_service_value { svc_id: i as u32, sched_len: 4, active: 4, ..Default::default() };
                self.services.insert(k, value, 0).context("floor_services: insert")?;
            }
        }
        Ok(())
    }

    /// (program, verified instructions, translated instructions, JIT bytes).
    ///
    /// # Errors
    /// If the kernel does not report program info.
    pub fn instruction_counts(&self) -> anyhow::Result<Vec<(&'static str, u32, u32, u32)>> {
        Floor::ALL
            .iter()
            .map(|f| {
                let info = self.program(*f)?.info()?;
                Ok((
                    f.program(),
                    info.verified_instruction_count().unwrap_or(0),
                    info.size_translated().unwrap_or(0) / 8,
                    info.size_jitted(),
                ))
            })
            .collect()
    }
}

/// Deletes every entry of a conntrack-shaped map (untimed housekeeping).
///
/// # Errors
/// A failed map operation.
pub fn clear_ct(ct: &mut CtMap) -> anyhow::Result<usize> {
    let keys: Vec<berth_ct_key> = ct.keys().collect::<Result<_, _>>().context("listing conntrack")?;
    let mut removed = 0;
    for k in &keys {
        // An LRU may have evicted it meanwhile: not an error.
        if ct.remove(k).is_ok() {
            removed += 1;
        }
    }
    Ok(removed)
}
