//! Pure NVML sampling logic: no N-API types and no dlopen here. `Api` is the slice of NVML the
//! agent uses; `dl::Library` implements it over the real (or fake) libnvidia-ml.so.1 and the tests
//! below implement it in memory.

/// nvmlReturn_t
pub type Ret = u32;
pub const SUCCESS: Ret = 0;
pub const ERROR_NOT_SUPPORTED: Ret = 3;
pub const ERROR_TIMEOUT: Ret = 10;
pub const ERROR_FUNCTION_NOT_FOUND: Ret = 13;
pub const ERROR_GPU_IS_LOST: Ret = 15;

/// NVML's symbolic name for a return code (nvml.h), used as the `code` label of poll errors.
pub fn error_name(r: Ret) -> &'static str {
    match r {
        0 => "NVML_SUCCESS",
        1 => "NVML_ERROR_UNINITIALIZED",
        2 => "NVML_ERROR_INVALID_ARGUMENT",
        3 => "NVML_ERROR_NOT_SUPPORTED",
        4 => "NVML_ERROR_NO_PERMISSION",
        5 => "NVML_ERROR_ALREADY_INITIALIZED",
        6 => "NVML_ERROR_NOT_FOUND",
        7 => "NVML_ERROR_INSUFFICIENT_SIZE",
        8 => "NVML_ERROR_INSUFFICIENT_POWER",
        9 => "NVML_ERROR_DRIVER_NOT_LOADED",
        10 => "NVML_ERROR_TIMEOUT",
        11 => "NVML_ERROR_IRQ_ISSUE",
        12 => "NVML_ERROR_LIBRARY_NOT_FOUND",
        13 => "NVML_ERROR_FUNCTION_NOT_FOUND",
        14 => "NVML_ERROR_CORRUPTED_INFOROM",
        15 => "NVML_ERROR_GPU_IS_LOST",
        16 => "NVML_ERROR_RESET_REQUIRED",
        17 => "NVML_ERROR_OPERATING_SYSTEM",
        18 => "NVML_ERROR_LIB_RM_VERSION_MISMATCH",
        19 => "NVML_ERROR_IN_USE",
        20 => "NVML_ERROR_MEMORY",
        21 => "NVML_ERROR_NO_DATA",
        22 => "NVML_ERROR_VGPU_ECC_NOT_SUPPORTED",
        23 => "NVML_ERROR_INSUFFICIENT_RESOURCES",
        24 => "NVML_ERROR_FREQ_NOT_SUPPORTED",
        25 => "NVML_ERROR_ARGUMENT_VERSION_MISMATCH",
        26 => "NVML_ERROR_DEPRECATED",
        27 => "NVML_ERROR_NOT_READY",
        28 => "NVML_ERROR_GPU_NOT_FOUND",
        29 => "NVML_ERROR_INVALID_STATE",
        _ => "NVML_ERROR_UNKNOWN",
    }
}

/// nvmlClockType_t
pub const CLOCK_SM: u32 = 1;
pub const CLOCK_MEM: u32 = 2;
/// nvmlMemoryErrorType_t
pub const ECC_CORRECTED: u32 = 0;
pub const ECC_UNCORRECTED: u32 = 1;

/// An opaque nvmlDevice_t, kept as an address so samples can cross threads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Handle(pub usize);

#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Utilization {
    pub gpu: u32,
    pub memory: u32,
}

#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Memory {
    pub total: u64,
    pub free: u64,
    pub used: u64,
}

#[derive(Clone, Debug, PartialEq)]
pub struct ProcessInfo {
    pub pid: u32,
    /// None when NVML cannot say (NVML_VALUE_NOT_AVAILABLE, e.g. under MIG without privileges).
    pub used_memory: Option<u64>,
    /// The MIG GPU and compute instance the process runs on; None outside MIG (NVML's 0xFFFFFFFF).
    pub gpu_instance_id: Option<u32>,
    pub compute_instance_id: Option<u32>,
}

/// The NVML calls the agent makes, one method per function. Errors are NVML return codes.
pub trait Api {
    fn device_count(&self) -> Result<u32, Ret>;
    fn handle(&self, index: u32) -> Result<Handle, Ret>;
    fn name(&self, h: Handle) -> Result<String, Ret>;
    fn uuid(&self, h: Handle) -> Result<String, Ret>;
    fn minor(&self, h: Handle) -> Result<u32, Ret>;
    fn pci_bus_id(&self, h: Handle) -> Result<String, Ret>;
    fn utilization(&self, h: Handle) -> Result<Utilization, Ret>;
    fn memory(&self, h: Handle) -> Result<Memory, Ret>;
    fn temperature(&self, h: Handle) -> Result<u32, Ret>;
    fn power_mw(&self, h: Handle) -> Result<u32, Ret>;
    fn power_limit_mw(&self, h: Handle) -> Result<u32, Ret>;
    fn clock_mhz(&self, h: Handle, clock: u32) -> Result<u32, Ret>;
    fn ecc_volatile(&self, h: Handle, error_type: u32) -> Result<u64, Ret>;
    fn throttle_reasons(&self, h: Handle) -> Result<u64, Ret>;
    /// Energy since the driver was (re)loaded, millijoules (nvmlDeviceGetTotalEnergyConsumption, Volta+).
    fn energy_mj(&self, h: Handle) -> Result<u64, Ret>;
    /// Current MIG mode (1 = enabled); NOT_SUPPORTED on GPUs without MIG.
    fn mig_mode(&self, h: Handle) -> Result<u32, Ret>;
    fn max_mig_devices(&self, h: Handle) -> Result<u32, Ret>;
    /// The MIG device at `index` of a parent in MIG mode; NOT_FOUND where no instance exists.
    fn mig_handle(&self, h: Handle, index: u32) -> Result<Handle, Ret>;
    fn gpu_instance_id(&self, h: Handle) -> Result<u32, Ret>;
    fn compute_instance_id(&self, h: Handle) -> Result<u32, Ret>;
    fn attributes(&self, h: Handle) -> Result<Attributes, Ret>;
    fn processes(&self, h: Handle) -> Result<Vec<ProcessInfo>, Ret>;
    /// The next pending critical-XID event without waiting: Ok(None) when there is none.
    fn next_xid(&self) -> Result<Option<(Handle, u64)>, Ret>;
}

#[derive(Clone, Debug, PartialEq)]
pub struct NvmlError {
    pub ret: Ret,
    /// Which call failed ("memory", "power", …), for field errors.
    pub field: &'static str,
}

/// One device's sample. A field NVML reports as NOT_SUPPORTED is None, never zero.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct DeviceSample {
    pub index: u32,
    pub minor: Option<u32>,
    pub uuid: Option<String>,
    pub name: Option<String>,
    pub pci_bus_id: Option<String>,
    pub utilization_gpu: Option<u32>,
    pub utilization_memory: Option<u32>,
    pub memory_total: Option<u64>,
    pub memory_used: Option<u64>,
    pub memory_free: Option<u64>,
    pub temperature_c: Option<u32>,
    /// AMD's junction (hotspot) sensor; NVML has no such reading.
    pub temperature_hotspot_c: Option<u32>,
    pub power_mw: Option<u32>,
    pub power_limit_mw: Option<u32>,
    pub sm_clock_mhz: Option<u32>,
    pub mem_clock_mhz: Option<u32>,
    pub ecc_corrected: Option<u64>,
    pub ecc_uncorrected: Option<u64>,
    pub throttle_reasons: Option<u64>,
    pub energy_mj: Option<u64>,
    /// MIG devices when the GPU is in MIG mode; None when MIG is off or not supported.
    pub mig: Option<Vec<MigSample>>,
    pub processes: Option<Vec<ProcessInfo>>,
    /// Set when the device as a whole failed (GPU lost): the other fields are then None.
    pub error: Option<NvmlError>,
    /// Calls that failed for other reasons than NOT_SUPPORTED; the device is still reported.
    pub field_errors: Vec<NvmlError>,
}

/// The parts of nvmlDeviceAttributes_t (v2) a MIG device's profile name is made of.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Attributes {
    pub gpu_instance_slices: u32,
    pub compute_instance_slices: u32,
    pub memory_size_mb: u64,
}

/// One MIG device (a compute instance of a GPU instance) of a GPU in MIG mode.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct MigSample {
    pub gpu_instance_id: Option<u32>,
    pub compute_instance_id: Option<u32>,
    pub uuid: Option<String>,
    pub attributes: Option<Attributes>,
    pub utilization_gpu: Option<u32>,
    pub memory_total: Option<u64>,
    pub memory_used: Option<u64>,
    pub memory_free: Option<u64>,
}

/// A device the agent polls: its index and cached handle.
#[derive(Clone, Copy, Debug)]
pub struct Device {
    pub index: u32,
    pub handle: Handle,
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct PollResult {
    pub devices: Vec<DeviceSample>,
    /// (device index, XID) for every critical XID event since the last poll.
    pub xids: Vec<(u32, u64)>,
}

/// Enough to stop one poll from draining a storm of events forever.
const MAX_XIDS_PER_POLL: usize = 256;

struct Lost;

/// Read one field: Some on success, None if unsupported or failed (failures are recorded), and
/// Err(Lost) when the GPU is gone, so the caller stops asking it anything else.
fn field<T>(s: &mut DeviceSample, name: &'static str, r: Result<T, Ret>) -> Result<Option<T>, Lost> {
    match r {
        Ok(v) => Ok(Some(v)),
        Err(ERROR_NOT_SUPPORTED) | Err(ERROR_FUNCTION_NOT_FOUND) => Ok(None),
        Err(ERROR_GPU_IS_LOST) => {
            s.error = Some(NvmlError { ret: ERROR_GPU_IS_LOST, field: name });
            Err(Lost)
        }
        Err(ret) => {
            s.field_errors.push(NvmlError { ret, field: name });
            Ok(None)
        }
    }
}

fn fill(api: &dyn Api, d: Device, s: &mut DeviceSample) -> Result<(), Lost> {
    let h = d.handle;
    s.name = field(s, "name", api.name(h))?;
    s.uuid = field(s, "uuid", api.uuid(h))?;
    s.minor = field(s, "minor", api.minor(h))?;
    s.pci_bus_id = field(s, "pci", api.pci_bus_id(h))?;
    if let Some(u) = field(s, "utilization", api.utilization(h))? {
        s.utilization_gpu = Some(u.gpu);
        s.utilization_memory = Some(u.memory);
    }
    if let Some(m) = field(s, "memory", api.memory(h))? {
        s.memory_total = Some(m.total);
        s.memory_used = Some(m.used);
        s.memory_free = Some(m.free);
    }
    s.temperature_c = field(s, "temperature", api.temperature(h))?;
    s.power_mw = field(s, "power", api.power_mw(h))?;
    s.power_limit_mw = field(s, "power_limit", api.power_limit_mw(h))?;
    s.sm_clock_mhz = field(s, "sm_clock", api.clock_mhz(h, CLOCK_SM))?;
    s.mem_clock_mhz = field(s, "mem_clock", api.clock_mhz(h, CLOCK_MEM))?;
    s.ecc_corrected = field(s, "ecc_corrected", api.ecc_volatile(h, ECC_CORRECTED))?;
    s.ecc_uncorrected = field(s, "ecc_uncorrected", api.ecc_volatile(h, ECC_UNCORRECTED))?;
    s.throttle_reasons = field(s, "throttle_reasons", api.throttle_reasons(h))?;
    s.energy_mj = field(s, "energy", api.energy_mj(h))?;
    if field(s, "mig_mode", api.mig_mode(h))? == Some(MIG_ENABLED) {
        s.mig = Some(mig_devices(api, h));
    }
    s.processes = field(s, "processes", api.processes(h))?;
    Ok(())
}

pub const MIG_ENABLED: u32 = 1;
const ERROR_NOT_FOUND: Ret = 6;

/// Each MIG device of a parent in MIG mode. Utilisation is read where NVML gives it (it answers
/// NOT_SUPPORTED for MIG devices on most drivers: then it is absent, not 0).
fn mig_devices(api: &dyn Api, parent: Handle) -> Vec<MigSample> {
    let max = api.max_mig_devices(parent).unwrap_or(0).min(MAX_MIG_DEVICES);
    let mut out = Vec::new();
    for i in 0..max {
        let h = match api.mig_handle(parent, i) {
            Ok(h) => h,
            Err(ERROR_NOT_FOUND) | Err(_) => continue,
        };
        let memory = api.memory(h).ok();
        out.push(MigSample {
            gpu_instance_id: api.gpu_instance_id(h).ok(),
            compute_instance_id: api.compute_instance_id(h).ok(),
            uuid: api.uuid(h).ok(),
            attributes: api.attributes(h).ok(),
            utilization_gpu: api.utilization(h).ok().map(|u| u.gpu),
            memory_total: memory.as_ref().map(|m| m.total),
            memory_used: memory.as_ref().map(|m| m.used),
            memory_free: memory.as_ref().map(|m| m.free),
        });
    }
    out
}

/// A GPU has at most 7 GPU instances, each with up to 7 compute instances (A100/H100).
const MAX_MIG_DEVICES: u32 = 64;

/// Sample one device. A lost GPU yields a sample with `error` set and nothing else.
pub fn sample_device(api: &dyn Api, d: Device) -> DeviceSample {
    let mut s = DeviceSample { index: d.index, ..Default::default() };
    if fill(api, d, &mut s).is_err() {
        let error = s.error.take();
        s = DeviceSample { index: d.index, error, ..Default::default() };
    }
    s
}

/// Sample every device and drain pending XID events.
pub fn poll(api: &dyn Api, devices: &[Device], xids_enabled: bool) -> PollResult {
    let mut out = PollResult { devices: devices.iter().map(|&d| sample_device(api, d)).collect(), xids: Vec::new() };
    if xids_enabled {
        while out.xids.len() < MAX_XIDS_PER_POLL {
            match api.next_xid() {
                Ok(Some((h, xid))) => {
                    if let Some(d) = devices.iter().find(|d| d.handle == h) {
                        out.xids.push((d.index, xid));
                    }
                }
                _ => break,
            }
        }
    }
    out
}

/// The devices to poll: every index NVML reports, with handles resolved once.
pub fn discover(api: &dyn Api) -> Result<Vec<Device>, Ret> {
    let n = api.device_count()?;
    let mut out = Vec::with_capacity(n as usize);
    for index in 0..n {
        // A device whose handle cannot be had is still listed, so the agent can report it in error.
        let handle = api.handle(index).unwrap_or(Handle(0));
        out.push(Device { index, handle });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;

    struct Mock {
        count: u32,
        lost: Option<u32>,
        unsupported_power: bool,
        permission_denied_processes: bool,
        mig_on_first: bool,
        xids: RefCell<Vec<(Handle, u64)>>,
    }

    impl Mock {
        fn new(count: u32) -> Self {
            Mock { count, lost: None, unsupported_power: false, permission_denied_processes: false, mig_on_first: false, xids: RefCell::new(vec![]) }
        }
        fn check(&self, h: Handle) -> Result<u32, Ret> {
            let i = (h.0 - 100) as u32;
            if Some(i) == self.lost {
                Err(ERROR_GPU_IS_LOST)
            } else {
                Ok(i)
            }
        }
    }

    impl Api for Mock {
        fn device_count(&self) -> Result<u32, Ret> {
            Ok(self.count)
        }
        fn handle(&self, index: u32) -> Result<Handle, Ret> {
            Ok(Handle(100 + index as usize))
        }
        fn name(&self, h: Handle) -> Result<String, Ret> {
            self.check(h).map(|_| "NVIDIA H100 80GB HBM3".into())
        }
        fn uuid(&self, h: Handle) -> Result<String, Ret> {
            self.check(h).map(|i| format!("GPU-{i}"))
        }
        fn minor(&self, h: Handle) -> Result<u32, Ret> {
            self.check(h)
        }
        fn pci_bus_id(&self, h: Handle) -> Result<String, Ret> {
            self.check(h).map(|i| format!("00000000:{:02X}:00.0", 0x18 + i))
        }
        fn utilization(&self, h: Handle) -> Result<Utilization, Ret> {
            // As on real drivers, a MIG device has no utilisation of its own.
            if h.0 >= 1000 {
                return Err(ERROR_NOT_SUPPORTED);
            }
            self.check(h).map(|i| Utilization { gpu: 30 + i, memory: 15 })
        }
        fn memory(&self, h: Handle) -> Result<Memory, Ret> {
            self.check(h).map(|_| Memory { total: 80 << 30, free: 70 << 30, used: 10 << 30 })
        }
        fn temperature(&self, h: Handle) -> Result<u32, Ret> {
            self.check(h).map(|i| 40 + i)
        }
        fn power_mw(&self, h: Handle) -> Result<u32, Ret> {
            self.check(h)?;
            if self.unsupported_power {
                Err(ERROR_NOT_SUPPORTED)
            } else {
                Ok(70_000)
            }
        }
        fn power_limit_mw(&self, h: Handle) -> Result<u32, Ret> {
            self.check(h).map(|_| 700_000)
        }
        fn clock_mhz(&self, h: Handle, clock: u32) -> Result<u32, Ret> {
            self.check(h).map(|_| if clock == CLOCK_SM { 1980 } else { 2619 })
        }
        fn ecc_volatile(&self, h: Handle, t: u32) -> Result<u64, Ret> {
            self.check(h).map(|_| t as u64)
        }
        fn throttle_reasons(&self, h: Handle) -> Result<u64, Ret> {
            self.check(h).map(|_| 0x1)
        }
        fn energy_mj(&self, h: Handle) -> Result<u64, Ret> {
            self.check(h).map(|_| 123_456_789)
        }
        fn mig_mode(&self, h: Handle) -> Result<u32, Ret> {
            self.check(h)?;
            if self.mig_on_first && h.0 == 100 {
                Ok(MIG_ENABLED)
            } else {
                Err(ERROR_NOT_SUPPORTED)
            }
        }
        fn max_mig_devices(&self, h: Handle) -> Result<u32, Ret> {
            self.check(h).map(|_| 7)
        }
        fn mig_handle(&self, _h: Handle, index: u32) -> Result<Handle, Ret> {
            // Instances at indexes 0 and 2; 1 is an empty slot.
            if index == 0 || index == 2 {
                Ok(Handle(1000 + index as usize))
            } else {
                Err(ERROR_NOT_FOUND)
            }
        }
        fn gpu_instance_id(&self, h: Handle) -> Result<u32, Ret> {
            Ok(h.0 as u32 - 1000 + 1)
        }
        fn compute_instance_id(&self, _h: Handle) -> Result<u32, Ret> {
            Ok(0)
        }
        fn attributes(&self, _h: Handle) -> Result<Attributes, Ret> {
            Ok(Attributes { gpu_instance_slices: 1, compute_instance_slices: 1, memory_size_mb: 9984 })
        }
        fn processes(&self, h: Handle) -> Result<Vec<ProcessInfo>, Ret> {
            self.check(h)?;
            if self.permission_denied_processes {
                return Err(4);
            }
            Ok(vec![ProcessInfo { pid: 42, used_memory: Some(1 << 30), gpu_instance_id: None, compute_instance_id: None }])
        }
        fn next_xid(&self) -> Result<Option<(Handle, u64)>, Ret> {
            Ok(self.xids.borrow_mut().pop())
        }
    }

    #[test]
    fn mig_devices_are_sampled_under_their_parent_and_empty_slots_skipped() {
        let mut api = Mock::new(2);
        api.mig_on_first = true;
        let d0 = sample_device(&api, Device { index: 0, handle: Handle(100) });
        let mig = d0.mig.expect("device 0 is in MIG mode");
        assert_eq!(mig.len(), 2, "slots 0 and 2 hold instances; 1 is empty");
        assert_eq!(mig[0].gpu_instance_id, Some(1));
        assert_eq!(mig[1].gpu_instance_id, Some(3));
        assert_eq!(mig[0].compute_instance_id, Some(0));
        assert_eq!(mig[0].attributes, Some(Attributes { gpu_instance_slices: 1, compute_instance_slices: 1, memory_size_mb: 9984 }));
        assert_eq!(mig[0].utilization_gpu, None, "NOT_SUPPORTED on a MIG device: absent");
        assert_eq!(mig[0].memory_used, Some(10 << 30));
        assert!(d0.field_errors.is_empty());
        let d1 = sample_device(&api, Device { index: 1, handle: Handle(101) });
        assert_eq!(d1.mig, None, "MIG not supported: no MIG list, and no field error");
        assert!(d1.field_errors.is_empty());
    }

    #[test]
    fn samples_every_field() {
        let api = Mock::new(2);
        let devices = discover(&api).unwrap();
        let r = poll(&api, &devices, true);
        assert_eq!(r.devices.len(), 2);
        let d = &r.devices[1];
        assert_eq!(d.uuid.as_deref(), Some("GPU-1"));
        assert_eq!(d.utilization_gpu, Some(31));
        assert_eq!(d.memory_used, Some(10 << 30));
        assert_eq!(d.power_mw, Some(70_000));
        assert_eq!(d.energy_mj, Some(123_456_789));
        assert_eq!(d.sm_clock_mhz, Some(1980));
        assert_eq!(d.mem_clock_mhz, Some(2619));
        assert_eq!(d.ecc_uncorrected, Some(1));
        assert_eq!(d.processes.as_ref().map(|p| p.len()), Some(1));
        assert!(d.error.is_none() && d.field_errors.is_empty());
    }

    #[test]
    fn not_supported_is_absent_not_zero() {
        let mut api = Mock::new(1);
        api.unsupported_power = true;
        let d = sample_device(&api, Device { index: 0, handle: Handle(100) });
        assert_eq!(d.power_mw, None);
        assert_eq!(d.temperature_c, Some(40));
        assert!(d.field_errors.is_empty(), "NOT_SUPPORTED is not an error");
    }

    #[test]
    fn a_lost_gpu_is_marked_and_the_others_still_reported() {
        let mut api = Mock::new(3);
        api.lost = Some(1);
        let r = poll(&api, &discover(&api).unwrap(), false);
        assert_eq!(r.devices[1].error, Some(NvmlError { ret: ERROR_GPU_IS_LOST, field: "name" }));
        assert_eq!(r.devices[1].temperature_c, None);
        assert_eq!(r.devices[0].temperature_c, Some(40));
        assert_eq!(r.devices[2].temperature_c, Some(42));
    }

    #[test]
    fn other_failures_are_field_errors() {
        let mut api = Mock::new(1);
        api.permission_denied_processes = true;
        let d = sample_device(&api, Device { index: 0, handle: Handle(100) });
        assert_eq!(d.processes, None);
        assert_eq!(d.field_errors, vec![NvmlError { ret: 4, field: "processes" }]);
        assert!(d.error.is_none());
    }

    #[test]
    fn drains_xids_and_maps_handles_to_indexes() {
        let api = Mock::new(2);
        api.xids.borrow_mut().extend([(Handle(101), 79), (Handle(100), 48)]);
        let r = poll(&api, &discover(&api).unwrap(), true);
        assert_eq!(r.xids, vec![(0, 48), (1, 79)]);
        assert!(poll(&api, &discover(&api).unwrap(), true).xids.is_empty());
    }

    #[test]
    fn error_names_follow_nvml_h() {
        assert_eq!(error_name(15), "NVML_ERROR_GPU_IS_LOST");
        assert_eq!(error_name(9), "NVML_ERROR_DRIVER_NOT_LOADED");
        assert_eq!(error_name(12345), "NVML_ERROR_UNKNOWN");
    }
}
