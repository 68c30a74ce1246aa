//! NVML loaded at run time with dlopen, so the addon builds and loads on machines without a GPU
//! driver. Symbols the driver lacks are treated as NOT_SUPPORTED for the fields they serve.

use crate::nvml::{self, Api, Handle, Memory, ProcessInfo, Ret, Utilization};
use std::ffi::{c_char, c_int, c_uint, c_ulonglong, c_void, CStr, CString};

#[link(name = "dl")]
extern "C" {
    fn dlopen(filename: *const c_char, flag: c_int) -> *mut c_void;
    pub(crate) fn dlsym(handle: *mut c_void, symbol: *const c_char) -> *mut c_void;
    fn dlerror() -> *const c_char;
    pub(crate) fn dlclose(handle: *mut c_void) -> c_int;
}
const RTLD_NOW: c_int = 2;

type Dev = *mut c_void;

#[repr(C)]
struct NvmlUtilization {
    gpu: c_uint,
    memory: c_uint,
}
#[repr(C)]
struct NvmlMemory {
    total: c_ulonglong,
    free: c_ulonglong,
    used: c_ulonglong,
}
#[repr(C)]
struct NvmlPciInfo {
    bus_id_legacy: [c_char; 16],
    domain: c_uint,
    bus: c_uint,
    device: c_uint,
    pci_device_id: c_uint,
    pci_sub_system_id: c_uint,
    bus_id: [c_char; 32],
}
/// nvmlProcessInfo_v2_t, the layout nvmlDeviceGetComputeRunningProcesses_v3 fills.
#[repr(C)]
#[derive(Clone, Copy)]
struct NvmlProcessInfo {
    pid: c_uint,
    used_gpu_memory: c_ulonglong,
    gpu_instance_id: c_uint,
    compute_instance_id: c_uint,
}
/// nvmlDeviceAttributes_t as nvmlDeviceGetAttributes_v2 fills it.
#[repr(C)]
#[derive(Default)]
struct NvmlDeviceAttributes {
    multiprocessor_count: c_uint,
    shared_copy_engine_count: c_uint,
    shared_decoder_count: c_uint,
    shared_encoder_count: c_uint,
    shared_jpeg_count: c_uint,
    shared_ofa_count: c_uint,
    gpu_instance_slice_count: c_uint,
    compute_instance_slice_count: c_uint,
    memory_size_mb: c_ulonglong,
}
#[repr(C)]
struct NvmlEventData {
    device: Dev,
    event_type: c_ulonglong,
    event_data: c_ulonglong,
    gpu_instance_id: c_uint,
    compute_instance_id: c_uint,
}

/// nvmlEventTypeXidCriticalError
const EVENT_XID_CRITICAL: c_ulonglong = 0x8;
/// NVML_VALUE_NOT_AVAILABLE for unsigned long long fields.
const VALUE_NOT_AVAILABLE: c_ulonglong = u64::MAX;

type FnVoid = unsafe extern "C" fn() -> Ret;
type FnU32Out = unsafe extern "C" fn(*mut c_uint) -> Ret;
type FnHandle = unsafe extern "C" fn(c_uint, *mut Dev) -> Ret;
type FnStr = unsafe extern "C" fn(Dev, *mut c_char, c_uint) -> Ret;
type FnDevU32 = unsafe extern "C" fn(Dev, *mut c_uint) -> Ret;
type FnDevU64 = unsafe extern "C" fn(Dev, *mut c_ulonglong) -> Ret;
type FnUtil = unsafe extern "C" fn(Dev, *mut NvmlUtilization) -> Ret;
type FnMem = unsafe extern "C" fn(Dev, *mut NvmlMemory) -> Ret;
type FnPci = unsafe extern "C" fn(Dev, *mut NvmlPciInfo) -> Ret;
type FnTemp = unsafe extern "C" fn(Dev, c_uint, *mut c_uint) -> Ret;
type FnClock = unsafe extern "C" fn(Dev, c_uint, *mut c_uint) -> Ret;
type FnEcc = unsafe extern "C" fn(Dev, c_uint, c_uint, *mut c_ulonglong) -> Ret;
type FnProcs = unsafe extern "C" fn(Dev, *mut c_uint, *mut NvmlProcessInfo) -> Ret;
type FnErrStr = unsafe extern "C" fn(Ret) -> *const c_char;
type FnSysStr = unsafe extern "C" fn(*mut c_char, c_uint) -> Ret;
type FnEventSetCreate = unsafe extern "C" fn(*mut *mut c_void) -> Ret;
type FnRegister = unsafe extern "C" fn(Dev, c_ulonglong, *mut c_void) -> Ret;
type FnEventWait = unsafe extern "C" fn(*mut c_void, *mut NvmlEventData, c_uint) -> Ret;
type FnEventFree = unsafe extern "C" fn(*mut c_void) -> Ret;
type FnMigMode = unsafe extern "C" fn(Dev, *mut c_uint, *mut c_uint) -> Ret;
type FnMigHandle = unsafe extern "C" fn(Dev, c_uint, *mut Dev) -> Ret;
type FnAttributes = unsafe extern "C" fn(Dev, *mut NvmlDeviceAttributes) -> Ret;

pub struct Library {
    lib: *mut c_void,
    pub path: String,
    init: FnVoid,
    shutdown: FnVoid,
    count: FnU32Out,
    handle: FnHandle,
    error_string: FnErrStr,
    name: Option<FnStr>,
    uuid: Option<FnStr>,
    minor: Option<FnDevU32>,
    pci: Option<FnPci>,
    util: Option<FnUtil>,
    mem: Option<FnMem>,
    temp: Option<FnTemp>,
    power: Option<FnDevU32>,
    power_limit: Option<FnDevU32>,
    clock: Option<FnClock>,
    ecc: Option<FnEcc>,
    throttle: Option<FnDevU64>,
    energy: Option<FnDevU64>,
    mig_mode: Option<FnMigMode>,
    max_mig: Option<FnDevU32>,
    mig_handle: Option<FnMigHandle>,
    gi_id: Option<FnDevU32>,
    ci_id: Option<FnDevU32>,
    attributes: Option<FnAttributes>,
    procs: Option<FnProcs>,
    driver_version: Option<FnSysStr>,
    nvml_version: Option<FnSysStr>,
    event_set_create: Option<FnEventSetCreate>,
    register_events: Option<FnRegister>,
    event_wait: Option<FnEventWait>,
    event_free: Option<FnEventFree>,
    event_set: *mut c_void,
}

// The handles are process-global NVML objects; NVML is thread-safe, and the binding serialises
// every call behind one mutex anyway.
unsafe impl Send for Library {}

pub(crate) unsafe fn sym(lib: *mut c_void, name: &str) -> *mut c_void {
    match CString::new(name) {
        Ok(c) => dlsym(lib, c.as_ptr()),
        Err(_) => std::ptr::null_mut(),
    }
}

/// A symbol the library must have, as a function pointer: when it is missing, the library is
/// closed and the enclosing function returns `$unavailable` with a message naming `$what`.
macro_rules! required {
    ($lib:expr, $name:literal, $what:literal, $unavailable:path) => {{
        let p = $crate::dl::sym($lib, $name);
        if p.is_null() {
            $crate::dl::dlclose($lib);
            return Err($unavailable(format!("{} has no symbol {}", $what, $name)));
        }
        // The target type is the field's declared fn-pointer type, inferred at each use: naming it
        // again here would be a second copy of the declaration to keep in step.
        #[allow(clippy::missing_transmute_annotations)]
        let f = std::mem::transmute::<*mut std::ffi::c_void, _>(p);
        f
    }};
}
pub(crate) use required;

/// dlopen with RTLD_NOW, or why not in the loader's words ("cannot load <what> from <path>: ...").
pub(crate) unsafe fn open_library(path: &str, what: &str) -> Result<*mut c_void, String> {
    let c = CString::new(path).map_err(|_| "NUL byte in library path".to_string())?;
    let lib = dlopen(c.as_ptr(), RTLD_NOW);
    if lib.is_null() {
        let e = dlerror();
        let msg = if e.is_null() { "dlopen failed".to_string() } else { CStr::from_ptr(e).to_string_lossy().into_owned() };
        return Err(format!("cannot load {what} from {path}: {msg}"));
    }
    Ok(lib)
}

pub(crate) unsafe fn optional<T: Copy>(lib: *mut c_void, names: &[&str]) -> Option<T> {
    for n in names {
        let p = sym(lib, n);
        if !p.is_null() {
            return Some(std::mem::transmute_copy::<*mut c_void, T>(&p));
        }
    }
    None
}

pub enum LoadError {
    /// dlopen failed or a required symbol is missing.
    Unavailable(String),
    /// nvmlInit_v2 returned an error.
    InitFailed(Ret, String),
}

pub(crate) fn c_buf_to_string(buf: &[c_char]) -> String {
    let bytes: Vec<u8> = buf.iter().take_while(|&&c| c != 0).map(|&c| c as u8).collect();
    String::from_utf8_lossy(&bytes).into_owned()
}

impl Library {
    /// dlopen + dlsym + nvmlInit_v2.
    pub fn open(path: &str) -> Result<Library, LoadError> {
        unsafe {
            let lib = open_library(path, "NVML").map_err(LoadError::Unavailable)?;
            let l = Library {
                lib,
                path: path.to_string(),
                init: required!(lib, "nvmlInit_v2", "NVML library", LoadError::Unavailable),
                shutdown: required!(lib, "nvmlShutdown", "NVML library", LoadError::Unavailable),
                count: required!(lib, "nvmlDeviceGetCount_v2", "NVML library", LoadError::Unavailable),
                handle: required!(lib, "nvmlDeviceGetHandleByIndex_v2", "NVML library", LoadError::Unavailable),
                error_string: required!(lib, "nvmlErrorString", "NVML library", LoadError::Unavailable),
                name: optional(lib, &["nvmlDeviceGetName"]),
                uuid: optional(lib, &["nvmlDeviceGetUUID"]),
                minor: optional(lib, &["nvmlDeviceGetMinorNumber"]),
                pci: optional(lib, &["nvmlDeviceGetPciInfo_v3"]),
                util: optional(lib, &["nvmlDeviceGetUtilizationRates"]),
                mem: optional(lib, &["nvmlDeviceGetMemoryInfo"]),
                temp: optional(lib, &["nvmlDeviceGetTemperature"]),
                power: optional(lib, &["nvmlDeviceGetPowerUsage"]),
                power_limit: optional(lib, &["nvmlDeviceGetEnforcedPowerLimit", "nvmlDeviceGetPowerManagementLimit"]),
                clock: optional(lib, &["nvmlDeviceGetClockInfo"]),
                ecc: optional(lib, &["nvmlDeviceGetTotalEccErrors"]),
                throttle: optional(lib, &["nvmlDeviceGetCurrentClocksEventReasons", "nvmlDeviceGetCurrentClocksThrottleReasons"]),
                energy: optional(lib, &["nvmlDeviceGetTotalEnergyConsumption"]),
                mig_mode: optional(lib, &["nvmlDeviceGetMigMode"]),
                max_mig: optional(lib, &["nvmlDeviceGetMaxMigDeviceCount"]),
                mig_handle: optional(lib, &["nvmlDeviceGetMigDeviceHandleByIndex"]),
                gi_id: optional(lib, &["nvmlDeviceGetGpuInstanceId"]),
                ci_id: optional(lib, &["nvmlDeviceGetComputeInstanceId"]),
                attributes: optional(lib, &["nvmlDeviceGetAttributes_v2"]),
                procs: optional(lib, &["nvmlDeviceGetComputeRunningProcesses_v3"]),
                driver_version: optional(lib, &["nvmlSystemGetDriverVersion"]),
                nvml_version: optional(lib, &["nvmlSystemGetNVMLVersion"]),
                event_set_create: optional(lib, &["nvmlEventSetCreate"]),
                register_events: optional(lib, &["nvmlDeviceRegisterEvents"]),
                event_wait: optional(lib, &["nvmlEventSetWait_v2"]),
                event_free: optional(lib, &["nvmlEventSetFree"]),
                event_set: std::ptr::null_mut(),
            };
            let r = (l.init)();
            if r != nvml::SUCCESS {
                let msg = l.error_text(r);
                dlclose(lib);
                return Err(LoadError::InitFailed(r, msg));
            }
            Ok(l)
        }
    }

    pub fn error_text(&self, r: Ret) -> String {
        unsafe {
            let p = (self.error_string)(r);
            if p.is_null() {
                nvml::error_name(r).to_string()
            } else {
                CStr::from_ptr(p).to_string_lossy().into_owned()
            }
        }
    }

    fn system_string(&self, f: Option<FnSysStr>) -> Option<String> {
        let f = f?;
        let mut buf = [0 as c_char; 96];
        let r = unsafe { f(buf.as_mut_ptr(), buf.len() as c_uint) };
        if r == nvml::SUCCESS {
            Some(c_buf_to_string(&buf))
        } else {
            None
        }
    }

    pub fn driver_version(&self) -> Option<String> {
        self.system_string(self.driver_version)
    }

    pub fn nvml_version(&self) -> Option<String> {
        self.system_string(self.nvml_version)
    }

    /// Create the event set and register every device for critical XID events. Returns an error
    /// text when XIDs cannot be watched (the rest of the telemetry works regardless).
    pub fn watch_xids(&mut self, devices: &[nvml::Device]) -> Result<(), String> {
        let (Some(create), Some(register), Some(_)) = (self.event_set_create, self.register_events, self.event_wait) else {
            return Err("this NVML has no event API".into());
        };
        unsafe {
            let mut set: *mut c_void = std::ptr::null_mut();
            let r = create(&mut set);
            if r != nvml::SUCCESS {
                return Err(format!("nvmlEventSetCreate: {}", self.error_text(r)));
            }
            self.event_set = set;
            let mut registered = 0;
            let mut last_error = String::new();
            for d in devices {
                let r = register(d.handle.0 as Dev, EVENT_XID_CRITICAL, set);
                if r == nvml::SUCCESS {
                    registered += 1
                } else {
                    last_error = format!("nvmlDeviceRegisterEvents(device {}): {}", d.index, self.error_text(r))
                }
            }
            if registered == 0 && !devices.is_empty() {
                Err(last_error)
            } else {
                Ok(())
            }
        }
    }

    pub fn close(&mut self) {
        unsafe {
            if !self.event_set.is_null() {
                if let Some(free) = self.event_free {
                    free(self.event_set);
                }
                self.event_set = std::ptr::null_mut();
            }
            (self.shutdown)();
            if !self.lib.is_null() {
                dlclose(self.lib);
                self.lib = std::ptr::null_mut();
            }
        }
    }
}

fn call<T>(f: Option<T>) -> Result<T, Ret> {
    f.ok_or(nvml::ERROR_FUNCTION_NOT_FOUND)
}

fn ok(r: Ret) -> Result<(), Ret> {
    if r == nvml::SUCCESS {
        Ok(())
    } else {
        Err(r)
    }
}

/// One `unsigned int` out-parameter getter (minor number, power, power limit).
fn read_u32(f: Option<FnDevU32>, h: Handle) -> Result<u32, Ret> {
    let f = call(f)?;
    let mut v: c_uint = 0;
    ok(unsafe { f(h.0 as Dev, &mut v) })?;
    Ok(v)
}

impl Api for Library {
    fn device_count(&self) -> Result<u32, Ret> {
        let mut n: c_uint = 0;
        ok(unsafe { (self.count)(&mut n) })?;
        Ok(n)
    }
    fn handle(&self, index: u32) -> Result<Handle, Ret> {
        let mut d: Dev = std::ptr::null_mut();
        ok(unsafe { (self.handle)(index, &mut d) })?;
        Ok(Handle(d as usize))
    }
    fn name(&self, h: Handle) -> Result<String, Ret> {
        let f = call(self.name)?;
        let mut buf = [0 as c_char; 96];
        ok(unsafe { f(h.0 as Dev, buf.as_mut_ptr(), buf.len() as c_uint) })?;
        Ok(c_buf_to_string(&buf))
    }
    fn uuid(&self, h: Handle) -> Result<String, Ret> {
        let f = call(self.uuid)?;
        let mut buf = [0 as c_char; 96];
        ok(unsafe { f(h.0 as Dev, buf.as_mut_ptr(), buf.len() as c_uint) })?;
        Ok(c_buf_to_string(&buf))
    }
    fn minor(&self, h: Handle) -> Result<u32, Ret> {
        read_u32(self.minor, h)
    }
    fn pci_bus_id(&self, h: Handle) -> Result<String, Ret> {
        let f = call(self.pci)?;
        let mut p = NvmlPciInfo { bus_id_legacy: [0; 16], domain: 0, bus: 0, device: 0, pci_device_id: 0, pci_sub_system_id: 0, bus_id: [0; 32] };
        ok(unsafe { f(h.0 as Dev, &mut p) })?;
        Ok(c_buf_to_string(&p.bus_id))
    }
    fn utilization(&self, h: Handle) -> Result<Utilization, Ret> {
        let f = call(self.util)?;
        let mut u = NvmlUtilization { gpu: 0, memory: 0 };
        ok(unsafe { f(h.0 as Dev, &mut u) })?;
        Ok(Utilization { gpu: u.gpu, memory: u.memory })
    }
    fn memory(&self, h: Handle) -> Result<Memory, Ret> {
        let f = call(self.mem)?;
        let mut m = NvmlMemory { total: 0, free: 0, used: 0 };
        ok(unsafe { f(h.0 as Dev, &mut m) })?;
        Ok(Memory { total: m.total, free: m.free, used: m.used })
    }
    fn temperature(&self, h: Handle) -> Result<u32, Ret> {
        let f = call(self.temp)?;
        let mut t: c_uint = 0;
        ok(unsafe { f(h.0 as Dev, 0, &mut t) })?;
        Ok(t)
    }
    fn power_mw(&self, h: Handle) -> Result<u32, Ret> {
        read_u32(self.power, h)
    }
    fn power_limit_mw(&self, h: Handle) -> Result<u32, Ret> {
        read_u32(self.power_limit, h)
    }
    fn clock_mhz(&self, h: Handle, clock: u32) -> Result<u32, Ret> {
        let f = call(self.clock)?;
        let mut v: c_uint = 0;
        ok(unsafe { f(h.0 as Dev, clock, &mut v) })?;
        Ok(v)
    }
    fn ecc_volatile(&self, h: Handle, error_type: u32) -> Result<u64, Ret> {
        let f = call(self.ecc)?;
        let mut v: c_ulonglong = 0;
        // counterType 0 = NVML_VOLATILE_ECC: since the last driver reload.
        ok(unsafe { f(h.0 as Dev, error_type, 0, &mut v) })?;
        Ok(v)
    }
    fn throttle_reasons(&self, h: Handle) -> Result<u64, Ret> {
        let f = call(self.throttle)?;
        let mut v: c_ulonglong = 0;
        ok(unsafe { f(h.0 as Dev, &mut v) })?;
        Ok(v)
    }
    fn energy_mj(&self, h: Handle) -> Result<u64, Ret> {
        let f = call(self.energy)?;
        let mut v: c_ulonglong = 0;
        ok(unsafe { f(h.0 as Dev, &mut v) })?;
        Ok(v)
    }
    fn mig_mode(&self, h: Handle) -> Result<u32, Ret> {
        let f = call(self.mig_mode)?;
        let (mut current, mut pending): (c_uint, c_uint) = (0, 0);
        ok(unsafe { f(h.0 as Dev, &mut current, &mut pending) })?;
        Ok(current)
    }
    fn max_mig_devices(&self, h: Handle) -> Result<u32, Ret> {
        read_u32(self.max_mig, h)
    }
    fn mig_handle(&self, h: Handle, index: u32) -> Result<Handle, Ret> {
        let f = call(self.mig_handle)?;
        let mut d: Dev = std::ptr::null_mut();
        ok(unsafe { f(h.0 as Dev, index, &mut d) })?;
        Ok(Handle(d as usize))
    }
    fn gpu_instance_id(&self, h: Handle) -> Result<u32, Ret> {
        read_u32(self.gi_id, h)
    }
    fn compute_instance_id(&self, h: Handle) -> Result<u32, Ret> {
        read_u32(self.ci_id, h)
    }
    fn attributes(&self, h: Handle) -> Result<nvml::Attributes, Ret> {
        let f = call(self.attributes)?;
        let mut a = NvmlDeviceAttributes::default();
        ok(unsafe { f(h.0 as Dev, &mut a) })?;
        Ok(nvml::Attributes {
            gpu_instance_slices: a.gpu_instance_slice_count,
            compute_instance_slices: a.compute_instance_slice_count,
            memory_size_mb: a.memory_size_mb,
        })
    }
    fn processes(&self, h: Handle) -> Result<Vec<ProcessInfo>, Ret> {
        let f = call(self.procs)?;
        let mut infos = [NvmlProcessInfo { pid: 0, used_gpu_memory: 0, gpu_instance_id: 0, compute_instance_id: 0 }; 64];
        let mut count: c_uint = infos.len() as c_uint;
        ok(unsafe { f(h.0 as Dev, &mut count, infos.as_mut_ptr()) })?;
        let n = (count as usize).min(infos.len());
        // NVML writes 0xFFFFFFFF in the instance ids of a process on a GPU not in MIG mode.
        let instance = |id: c_uint| if id == c_uint::MAX { None } else { Some(id) };
        Ok(infos[..n]
            .iter()
            .map(|p| ProcessInfo {
                pid: p.pid,
                used_memory: if p.used_gpu_memory == VALUE_NOT_AVAILABLE { None } else { Some(p.used_gpu_memory) },
                gpu_instance_id: instance(p.gpu_instance_id),
                compute_instance_id: instance(p.compute_instance_id),
            })
            .collect())
    }
    fn next_xid(&self) -> Result<Option<(Handle, u64)>, Ret> {
        let f = call(self.event_wait)?;
        if self.event_set.is_null() {
            return Ok(None);
        }
        let mut e = NvmlEventData { device: std::ptr::null_mut(), event_type: 0, event_data: 0, gpu_instance_id: 0, compute_instance_id: 0 };
        // Timeout 0: only what is already pending; the poll must never wait here.
        match unsafe { f(self.event_set, &mut e, 0) } {
            nvml::SUCCESS => Ok(Some((Handle(e.device as usize), e.event_data))),
            nvml::ERROR_TIMEOUT => Ok(None),
            r => Err(r),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs against the library named by INFERTEL_TEST_NVML_LIBRARY: the fake one in `npm test`,
    /// the driver's on a GPU machine. Skipped when the variable is unset.
    #[test]
    fn polls_the_library_named_by_the_environment() {
        let Ok(path) = std::env::var("INFERTEL_TEST_NVML_LIBRARY") else {
            eprintln!("INFERTEL_TEST_NVML_LIBRARY unset: skipped");
            return;
        };
        let mut lib = match Library::open(&path) {
            Ok(l) => l,
            Err(LoadError::Unavailable(m)) => panic!("unavailable: {m}"),
            Err(LoadError::InitFailed(r, m)) => panic!("init failed {r}: {m}"),
        };
        let devices = nvml::discover(&lib).expect("device count");
        assert!(!devices.is_empty(), "no devices");
        let xids = lib.watch_xids(&devices);
        let t0 = std::time::Instant::now();
        let r = nvml::poll(&lib, &devices, xids.is_ok());
        let us = t0.elapsed().as_micros();
        eprintln!("driver {:?}, nvml {:?}, xid events: {:?}", lib.driver_version(), lib.nvml_version(), xids);
        for d in &r.devices {
            eprintln!("{d:?}");
            assert!(d.error.is_none());
            assert!(d.memory_total.unwrap_or(0) > 0);
            assert!(d.uuid.as_deref().unwrap_or("").starts_with("GPU-"));
        }
        eprintln!("one poll of {} device(s): {us} us", devices.len());
        lib.close();
    }
}
