//! Pure AMD SMI sampling logic: which struct layouts a library version uses, how those structs
//! decode, and how one GPU's sample is read. No dlopen here (amd_dl.rs) and no N-API (lib.rs).
//! Samples are the NVML module's `DeviceSample`, so both vendors leave the addon in one shape.

use crate::nvml::{DeviceSample, Handle, NvmlError, ProcessInfo};

/// amdsmi_status_t
pub type Status = u32;
pub const SUCCESS: Status = 0;
pub const NOT_SUPPORTED: Status = 2;
pub const NOT_YET_IMPLEMENTED: Status = 3;
/// Also what the binding answers for a function the loaded library does not export.
pub const FAIL_LOAD_SYMBOL: Status = 5;
pub const OUT_OF_RESOURCES: Status = 15;
pub const NOT_FOUND: Status = 31;
pub const DRIVER_NOT_LOADED: Status = 34;
pub const NO_DATA: Status = 40;

/// AMD SMI's symbolic name for a status (amdsmi.h), used as the `code` label of poll errors.
pub fn status_name(s: Status) -> &'static str {
    match s {
        0 => "AMDSMI_STATUS_SUCCESS",
        1 => "AMDSMI_STATUS_INVAL",
        2 => "AMDSMI_STATUS_NOT_SUPPORTED",
        3 => "AMDSMI_STATUS_NOT_YET_IMPLEMENTED",
        4 => "AMDSMI_STATUS_FAIL_LOAD_MODULE",
        5 => "AMDSMI_STATUS_FAIL_LOAD_SYMBOL",
        6 => "AMDSMI_STATUS_DRM_ERROR",
        7 => "AMDSMI_STATUS_API_FAILED",
        8 => "AMDSMI_STATUS_TIMEOUT",
        9 => "AMDSMI_STATUS_RETRY",
        10 => "AMDSMI_STATUS_NO_PERM",
        11 => "AMDSMI_STATUS_INTERRUPT",
        12 => "AMDSMI_STATUS_IO",
        13 => "AMDSMI_STATUS_ADDRESS_FAULT",
        14 => "AMDSMI_STATUS_FILE_ERROR",
        15 => "AMDSMI_STATUS_OUT_OF_RESOURCES",
        16 => "AMDSMI_STATUS_INTERNAL_EXCEPTION",
        17 => "AMDSMI_STATUS_INPUT_OUT_OF_BOUNDS",
        18 => "AMDSMI_STATUS_INIT_ERROR",
        19 => "AMDSMI_STATUS_REFCOUNT_OVERFLOW",
        20 => "AMDSMI_STATUS_DIRECTORY_NOT_FOUND",
        30 => "AMDSMI_STATUS_BUSY",
        31 => "AMDSMI_STATUS_NOT_FOUND",
        32 => "AMDSMI_STATUS_NOT_INIT",
        33 => "AMDSMI_STATUS_NO_SLOT",
        34 => "AMDSMI_STATUS_DRIVER_NOT_LOADED",
        39 => "AMDSMI_STATUS_MORE_DATA",
        40 => "AMDSMI_STATUS_NO_DATA",
        41 => "AMDSMI_STATUS_INSUFFICIENT_SIZE",
        42 => "AMDSMI_STATUS_UNEXPECTED_SIZE",
        43 => "AMDSMI_STATUS_UNEXPECTED_DATA",
        0xFFFF_FFFE => "AMDSMI_STATUS_MAP_ERROR",
        _ => "AMDSMI_STATUS_UNKNOWN_ERROR",
    }
}

/// The struct layouts of one library generation. The first `uint32_t` of amdsmi_version_t is the
/// generation in both: `year` (24) in the 24.6-era struct, `major` (24, 25, 26) after it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Abi {
    /// Libraries 24.x and 25.x (ROCm 6.x): 32-byte process names, an all-uint32 power info.
    Rocm6,
    /// Library 26.x (ROCm 7.x): 256-byte strings, `socket_power` and 64-bit voltages in the power info.
    Rocm7,
}

pub fn abi_for(generation: u32) -> Option<Abi> {
    match generation {
        24 | 25 => Some(Abi::Rocm6),
        26 => Some(Abi::Rocm7),
        _ => None,
    }
}

/// Byte offsets into the structs whose layout differs between generations.
pub struct Layout {
    pub power_info_size: usize,
    pub current_socket_power: usize,
    pub average_socket_power: usize,
    pub proc_info_size: usize,
    pub proc_pid: usize,
    pub proc_vram: usize,
}

impl Abi {
    pub fn layout(self) -> Layout {
        match self {
            // name[32]; pid @32; mem @40; engine_usage @48 (64 B); memory_usage @112: gtt, cpu, vram @128; container[32] @176; reserved → 224.
            Abi::Rocm6 => Layout { power_info_size: 68, current_socket_power: 0, average_socket_power: 4, proc_info_size: 224, proc_pid: 32, proc_vram: 128 },
            // name[256]; pid @256; mem @264; engine_usage @272; memory_usage @336: vram @352; container[256] @400; cu, evicted, reserved → 704.
            Abi::Rocm7 => {
                Layout { power_info_size: 192, current_socket_power: 8, average_socket_power: 12, proc_info_size: 704, proc_pid: 256, proc_vram: 352 }
            }
        }
    }
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    b.get(at..at + 4).map(|s| u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
}

fn u64_at(b: &[u8], at: usize) -> Option<u64> {
    b.get(at..at + 8).map(|s| u64::from_le_bytes([s[0], s[1], s[2], s[3], s[4], s[5], s[6], s[7]]))
}

/// The library writes UINT32_MAX (and UINT16_MAX for some activity fields) where it has no value.
fn present(v: u32) -> Option<u32> {
    if v == u32::MAX || v == u16::MAX as u32 {
        None
    } else {
        Some(v)
    }
}

/// Socket power in watts from an amdsmi_power_info_t: `current_socket_power` (MI300 and later),
/// else `average_socket_power` (MI200, Navi). Either may be UINT32_MAX: then it is absent.
pub fn decode_power_w(abi: Abi, b: &[u8]) -> Option<u32> {
    let l = abi.layout();
    let current = u32_at(b, l.current_socket_power).and_then(present).filter(|&w| w > 0);
    current.or_else(|| u32_at(b, l.average_socket_power).and_then(present))
}

/// pid and VRAM bytes from one amdsmi_proc_info_t.
pub fn decode_process(abi: Abi, b: &[u8]) -> Option<ProcessInfo> {
    let l = abi.layout();
    let pid = u32_at(b, l.proc_pid)?;
    let vram = u64_at(b, l.proc_vram)?;
    Some(ProcessInfo { pid, used_memory: Some(vram), gpu_instance_id: None, compute_instance_id: None })
}

/// PCI address in the kernel's form (0000:0c:00.0) from amdsmi_bdf_t's packed bits.
pub fn format_bdf(bdf: u64) -> String {
    let function = bdf & 0x7;
    let device = (bdf >> 3) & 0x1f;
    let bus = (bdf >> 8) & 0xff;
    let domain = bdf >> 16;
    format!("{domain:04x}:{bus:02x}:{device:02x}.{function:x}")
}

/// Energy in millijoules from the accumulator and its resolution (micro-joules per count).
pub fn energy_mj(accumulator: u64, resolution_uj: f32) -> u64 {
    (accumulator as f64 * resolution_uj as f64 / 1000.0).round() as u64
}

/// amdsmi_clk_type_t
pub const CLK_GFX: u32 = 0;
pub const CLK_MEM: u32 = 4;
/// amdsmi_temperature_type_t
pub const TEMP_EDGE: u32 = 0;
pub const TEMP_HOTSPOT: u32 = 1;

/// The AMD SMI calls the agent makes. Structs whose layout changed are returned as raw bytes
/// (sized for the loaded generation) and decoded by the functions above.
pub trait Api {
    fn abi(&self) -> Abi;
    fn processors(&self) -> Result<Vec<Handle>, Status>;
    fn market_name(&self, h: Handle) -> Result<String, Status>;
    fn uuid(&self, h: Handle) -> Result<String, Status>;
    fn bdf(&self, h: Handle) -> Result<u64, Status>;
    /// (gfx_activity, umc_activity) as the library wrote them.
    fn activity(&self, h: Handle) -> Result<(u32, u32), Status>;
    fn vram_total(&self, h: Handle) -> Result<u64, Status>;
    fn vram_used(&self, h: Handle) -> Result<u64, Status>;
    /// Degrees Celsius (whatever the 24.x header comment says about millidegrees).
    fn temperature(&self, h: Handle, sensor: u32) -> Result<i64, Status>;
    fn power_info(&self, h: Handle) -> Result<Vec<u8>, Status>;
    /// amdsmi_power_cap_info_t.power_cap: micro-watts on Linux bare metal in both generations.
    fn power_cap_uw(&self, h: Handle) -> Result<u64, Status>;
    fn clock_mhz(&self, h: Handle, clock: u32) -> Result<u32, Status>;
    /// (correctable, uncorrectable) since the driver loaded.
    fn ecc(&self, h: Handle) -> Result<(u64, u64), Status>;
    /// (accumulator, micro-joules per count).
    fn energy(&self, h: Handle) -> Result<(u64, f32), Status>;
    /// Raw amdsmi_proc_info_t records, one per process.
    fn processes(&self, h: Handle) -> Result<Vec<Vec<u8>>, Status>;
}

struct Lost;

fn field<T>(s: &mut DeviceSample, name: &'static str, r: Result<T, Status>) -> Result<Option<T>, Lost> {
    match r {
        Ok(v) => Ok(Some(v)),
        Err(NOT_SUPPORTED) | Err(NOT_YET_IMPLEMENTED) | Err(FAIL_LOAD_SYMBOL) | Err(NO_DATA) => Ok(None),
        Err(ret @ (NOT_FOUND | DRIVER_NOT_LOADED)) => {
            s.error = Some(NvmlError { ret, field: name });
            Err(Lost)
        }
        Err(ret) => {
            s.field_errors.push(NvmlError { ret, field: name });
            Ok(None)
        }
    }
}

fn percent(v: u32) -> Option<u32> {
    present(v).filter(|&p| p <= 100)
}

fn fill(api: &dyn Api, h: Handle, s: &mut DeviceSample) -> Result<(), Lost> {
    let abi = api.abi();
    s.name = field(s, "name", api.market_name(h))?;
    s.uuid = field(s, "uuid", api.uuid(h))?;
    s.pci_bus_id = field(s, "pci", api.bdf(h))?.map(format_bdf);
    if let Some((gfx, umc)) = field(s, "activity", api.activity(h))? {
        s.utilization_gpu = percent(gfx);
        s.utilization_memory = percent(umc);
    }
    let total = field(s, "memory_total", api.vram_total(h))?;
    let used = field(s, "memory_used", api.vram_used(h))?;
    s.memory_total = total;
    s.memory_used = used;
    s.memory_free = total.zip(used).map(|(t, u)| t.saturating_sub(u));
    let celsius = |t: i64| u32::try_from(t).ok();
    s.temperature_c = field(s, "temperature", api.temperature(h, TEMP_EDGE))?.and_then(celsius);
    s.temperature_hotspot_c = field(s, "temperature_hotspot", api.temperature(h, TEMP_HOTSPOT))?.and_then(celsius);
    s.power_mw = field(s, "power", api.power_info(h))?.and_then(|b| decode_power_w(abi, &b)).map(|w| w.saturating_mul(1000));
    s.power_limit_mw = field(s, "power_limit", api.power_cap_uw(h))?.map(|uw| (uw / 1000).min(u32::MAX as u64) as u32);
    s.sm_clock_mhz = field(s, "sm_clock", api.clock_mhz(h, CLK_GFX))?.and_then(present);
    s.mem_clock_mhz = field(s, "mem_clock", api.clock_mhz(h, CLK_MEM))?.and_then(present);
    if let Some((corrected, uncorrected)) = field(s, "ecc", api.ecc(h))? {
        s.ecc_corrected = Some(corrected);
        s.ecc_uncorrected = Some(uncorrected);
    }
    s.energy_mj = field(s, "energy", api.energy(h))?.map(|(acc, res)| energy_mj(acc, res));
    s.processes = field(s, "processes", api.processes(h))?.map(|records| records.iter().filter_map(|r| decode_process(abi, r)).collect());
    Ok(())
}

/// Sample one GPU. A lost GPU yields a sample with `error` set and nothing else.
pub fn sample_device(api: &dyn Api, index: u32, h: Handle) -> DeviceSample {
    let mut s = DeviceSample { index, ..Default::default() };
    if fill(api, h, &mut s).is_err() {
        let error = s.error.take();
        s = DeviceSample { index, error, ..Default::default() };
    }
    s
}

pub fn poll(api: &dyn Api, handles: &[Handle]) -> Vec<DeviceSample> {
    handles.iter().enumerate().map(|(i, &h)| sample_device(api, i as u32, h)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generations_map_to_layouts_and_unknown_ones_to_none() {
        for (generation, abi) in [(23, None), (24, Some(Abi::Rocm6)), (25, Some(Abi::Rocm6)), (26, Some(Abi::Rocm7)), (27, None), (6, None)] {
            assert_eq!(abi_for(generation), abi, "generation {generation}");
        }
    }

    /// Bytes of a power info with `current` and `average` at the offsets the header excerpts give
    /// (test/fixtures/amdsmi): the 24.x struct starts with them; the 26.x one puts a uint64_t first.
    fn power_bytes(abi: Abi, current: u32, average: u32) -> Vec<u8> {
        let mut b = vec![0xFFu8; abi.layout().power_info_size];
        let at = if abi == Abi::Rocm6 { 0 } else { 8 };
        b[at..at + 4].copy_from_slice(&current.to_le_bytes());
        b[at + 4..at + 8].copy_from_slice(&average.to_le_bytes());
        b
    }

    #[test]
    fn power_prefers_current_then_average_and_never_reads_the_unsupported_marker() {
        let rows = [
            (Abi::Rocm6, 350, u32::MAX, Some(350)),
            (Abi::Rocm6, u32::MAX, 290, Some(290)),
            (Abi::Rocm6, 0, 290, Some(290)),
            (Abi::Rocm6, u32::MAX, u32::MAX, None),
            (Abi::Rocm7, 612, u32::MAX, Some(612)),
            (Abi::Rocm7, u32::MAX, 301, Some(301)),
            (Abi::Rocm7, u32::MAX, u32::MAX, None),
        ];
        for (abi, current, average, want) in rows {
            assert_eq!(decode_power_w(abi, &power_bytes(abi, current, average)), want, "{abi:?} {current} {average}");
        }
    }

    #[test]
    fn a_short_buffer_decodes_to_nothing_rather_than_reading_past_it() {
        assert_eq!(decode_power_w(Abi::Rocm7, &[1, 2, 3]), None);
        assert_eq!(decode_process(Abi::Rocm7, &[0; 300]), None);
    }

    #[test]
    fn bdf_is_formatted_as_the_kernel_writes_it() {
        for (bdf, want) in [(0x0c00u64, "0000:0c:00.0"), ((1u64 << 16) | (0x8a << 8) | (3 << 3) | 1, "0001:8a:03.1"), (0, "0000:00:00.0")] {
            assert_eq!(format_bdf(bdf), want);
        }
    }

    #[test]
    fn energy_multiplies_counts_by_the_resolution_in_microjoules() {
        // 655360 counts of 15.259 uJ (as f32) = 10.0001... J.
        assert_eq!(energy_mj(655_360, 15.259), 10_000);
        assert_eq!(energy_mj(0, 15.259), 0);
        assert_eq!(energy_mj(1_000_000, 1.0), 1_000);
    }

    struct Mock {
        lost: Option<u32>,
        unsupported_power: bool,
        denied_ecc: bool,
    }

    impl Mock {
        fn check(&self, h: Handle) -> Result<u32, Status> {
            let i = h.0 as u32;
            if Some(i) == self.lost {
                Err(NOT_FOUND)
            } else {
                Ok(i)
            }
        }
    }

    impl Api for Mock {
        fn abi(&self) -> Abi {
            Abi::Rocm7
        }
        fn processors(&self) -> Result<Vec<Handle>, Status> {
            Ok(vec![Handle(0), Handle(1), Handle(2)])
        }
        fn market_name(&self, h: Handle) -> Result<String, Status> {
            self.check(h).map(|_| "AMD Instinct MI300X".into())
        }
        fn uuid(&self, h: Handle) -> Result<String, Status> {
            self.check(h).map(|i| format!("uuid-{i}"))
        }
        fn bdf(&self, h: Handle) -> Result<u64, Status> {
            self.check(h).map(|i| (0x0c + 0x10 * i as u64) << 8)
        }
        fn activity(&self, h: Handle) -> Result<(u32, u32), Status> {
            self.check(h).map(|i| (40 + i, u16::MAX as u32))
        }
        fn vram_total(&self, h: Handle) -> Result<u64, Status> {
            self.check(h).map(|_| 192 << 30)
        }
        fn vram_used(&self, h: Handle) -> Result<u64, Status> {
            self.check(h).map(|_| 64 << 30)
        }
        fn temperature(&self, h: Handle, sensor: u32) -> Result<i64, Status> {
            self.check(h).map(|_| if sensor == TEMP_EDGE { 45 } else { 61 })
        }
        fn power_info(&self, h: Handle) -> Result<Vec<u8>, Status> {
            self.check(h)?;
            if self.unsupported_power {
                Err(NOT_SUPPORTED)
            } else {
                Ok(power_bytes(Abi::Rocm7, 612, u32::MAX))
            }
        }
        fn power_cap_uw(&self, h: Handle) -> Result<u64, Status> {
            self.check(h).map(|_| 750_000_000)
        }
        fn clock_mhz(&self, h: Handle, clock: u32) -> Result<u32, Status> {
            self.check(h).map(|_| if clock == CLK_GFX { 2100 } else { 1300 })
        }
        fn ecc(&self, h: Handle) -> Result<(u64, u64), Status> {
            self.check(h)?;
            if self.denied_ecc {
                Err(10)
            } else {
                Ok((3, 0))
            }
        }
        fn energy(&self, h: Handle) -> Result<(u64, f32), Status> {
            self.check(h).map(|_| (655_360, 15.259))
        }
        fn processes(&self, h: Handle) -> Result<Vec<Vec<u8>>, Status> {
            self.check(h)?;
            let mut r = vec![0u8; 704];
            r[256..260].copy_from_slice(&4242u32.to_le_bytes());
            r[352..360].copy_from_slice(&(5u64 << 30).to_le_bytes());
            Ok(vec![r])
        }
    }

    #[test]
    fn samples_every_field_in_the_shared_units() {
        let api = Mock { lost: None, unsupported_power: false, denied_ecc: false };
        let d = sample_device(&api, 1, Handle(1));
        assert_eq!(d.name.as_deref(), Some("AMD Instinct MI300X"));
        assert_eq!(d.pci_bus_id.as_deref(), Some("0000:1c:00.0"));
        assert_eq!(d.utilization_gpu, Some(41));
        assert_eq!(d.utilization_memory, None, "UINT16_MAX means the library has no value");
        assert_eq!(d.memory_free, Some(128 << 30));
        assert_eq!((d.temperature_c, d.temperature_hotspot_c), (Some(45), Some(61)));
        assert_eq!(d.power_mw, Some(612_000));
        assert_eq!(d.power_limit_mw, Some(750_000), "micro-watts to milliwatts");
        assert_eq!((d.sm_clock_mhz, d.mem_clock_mhz), (Some(2100), Some(1300)));
        assert_eq!(d.energy_mj, Some(10_000));
        assert_eq!(d.processes, Some(vec![ProcessInfo { pid: 4242, used_memory: Some(5 << 30), gpu_instance_id: None, compute_instance_id: None }]));
        assert!(d.error.is_none() && d.field_errors.is_empty());
    }

    #[test]
    fn not_supported_is_absent_other_failures_are_field_errors_and_a_lost_gpu_is_marked() {
        let api = Mock { lost: Some(1), unsupported_power: true, denied_ecc: true };
        let r = poll(&api, &api.processors().unwrap());
        assert_eq!(r[0].power_mw, None);
        assert_eq!(r[0].ecc_corrected, None);
        assert_eq!(r[0].field_errors, vec![NvmlError { ret: 10, field: "ecc" }]);
        assert_eq!(r[1].error, Some(NvmlError { ret: NOT_FOUND, field: "name" }));
        assert_eq!(r[1].temperature_c, None);
        assert_eq!(r[2].temperature_c, Some(45));
    }

    #[test]
    fn status_names_follow_amdsmi_h() {
        assert_eq!(status_name(31), "AMDSMI_STATUS_NOT_FOUND");
        assert_eq!(status_name(2), "AMDSMI_STATUS_NOT_SUPPORTED");
        assert_eq!(status_name(12345), "AMDSMI_STATUS_UNKNOWN_ERROR");
    }
}
