//! AMD SMI (libamd_smi.so) loaded at run time with dlopen, so nothing of ROCm is needed to build.
//! The function signatures are declared by hand from amdsmi.h (test/fixtures/amdsmi holds the
//! excerpts). Structs whose layout changed between library generations are read as bytes and
//! decoded in amdsmi.rs; the others are the same in 24.x, 25.x and 26.x.

use crate::amdsmi::{self, Abi, Api, Status};
use crate::dl::{c_buf_to_string, dlclose, open_library, optional, required};
use crate::nvml::Handle;
use std::ffi::{c_char, c_uint, c_void, CStr};

type Proc = *mut c_void;

/// amdsmi_init_flags_t: AMDSMI_INIT_AMD_GPUS.
const INIT_AMD_GPUS: u64 = 1 << 1;
/// amdsmi_memory_type_t: AMDSMI_MEM_TYPE_VRAM.
const MEM_VRAM: u32 = 0;
/// AMDSMI_GPU_UUID_SIZE is 38; room to spare.
const UUID_BUFFER: usize = 64;
/// The largest struct read whole here is the 26.x asic info (~900 bytes); every buffer is zeroed
/// and at least this big, so a library a little newer than its generation cannot write past it.
const STRUCT_BUFFER: usize = 4096;
/// Enough processes for any one GPU; the library says OUT_OF_RESOURCES when there are more.
const MAX_PROCESSES: usize = 64;

#[repr(C)]
struct ClkInfo {
    clk: u32,
    min_clk: u32,
    max_clk: u32,
    clk_locked: u8,
    clk_deep_sleep: u8,
    reserved: [u32; 4],
}
#[repr(C)]
struct EngineUsage {
    gfx_activity: u32,
    umc_activity: u32,
    mm_activity: u32,
    reserved: [u32; 13],
}
#[repr(C)]
struct ErrorCount {
    correctable: u64,
    uncorrectable: u64,
    deferred: u64,
    reserved: [u64; 5],
}
#[repr(C)]
struct PowerCapInfo {
    power_cap: u64,
    default_power_cap: u64,
    dpm_cap: u64,
    min_power_cap: u64,
    max_power_cap: u64,
    reserved: [u64; 3],
}

type FnInit = unsafe extern "C" fn(u64) -> Status;
type FnVoid = unsafe extern "C" fn() -> Status;
type FnBuf = unsafe extern "C" fn(*mut u8) -> Status;
type FnStatusString = unsafe extern "C" fn(Status, *mut *const c_char) -> Status;
type FnSockets = unsafe extern "C" fn(*mut u32, *mut Proc) -> Status;
type FnProcessors = unsafe extern "C" fn(Proc, *mut u32, *mut Proc) -> Status;
type FnProcBuf = unsafe extern "C" fn(Proc, *mut u8) -> Status;
type FnUuid = unsafe extern "C" fn(Proc, *mut c_uint, *mut c_char) -> Status;
type FnU64Out = unsafe extern "C" fn(Proc, *mut u64) -> Status;
type FnActivity = unsafe extern "C" fn(Proc, *mut EngineUsage) -> Status;
type FnMemory = unsafe extern "C" fn(Proc, u32, *mut u64) -> Status;
type FnTemp = unsafe extern "C" fn(Proc, u32, u32, *mut i64) -> Status;
type FnPowerCap = unsafe extern "C" fn(Proc, u32, *mut PowerCapInfo) -> Status;
type FnClock = unsafe extern "C" fn(Proc, u32, *mut ClkInfo) -> Status;
type FnEcc = unsafe extern "C" fn(Proc, *mut ErrorCount) -> Status;
type FnEnergy = unsafe extern "C" fn(Proc, *mut u64, *mut f32, *mut u64) -> Status;
type FnProcesses = unsafe extern "C" fn(Proc, *mut u32, *mut u8) -> Status;

pub struct Library {
    lib: *mut c_void,
    pub path: String,
    pub abi: Abi,
    /// "26.1.0": the generation, then the two numbers that follow it in amdsmi_version_t.
    pub version: String,
    shut_down: FnVoid,
    status_string: Option<FnStatusString>,
    sockets: FnSockets,
    processors: FnProcessors,
    asic: Option<FnProcBuf>,
    uuid: Option<FnUuid>,
    bdf: Option<FnU64Out>,
    activity: Option<FnActivity>,
    memory_total: Option<FnMemory>,
    memory_usage: Option<FnMemory>,
    temp: Option<FnTemp>,
    power: Option<FnProcBuf>,
    power_cap: Option<FnPowerCap>,
    clock: Option<FnClock>,
    ecc: Option<FnEcc>,
    energy: Option<FnEnergy>,
    process_list: Option<FnProcesses>,
}

// The handles are process-global library objects; the binding serialises every call behind one mutex.
unsafe impl Send for Library {}

pub enum LoadError {
    /// dlopen failed or a required symbol is missing.
    Unavailable(String),
    /// amdsmi_init returned an error.
    InitFailed(Status, String),
    /// The library is of a generation whose struct layouts this addon does not know.
    UnknownAbi(String),
}

fn ok(r: Status) -> Result<(), Status> {
    if r == amdsmi::SUCCESS {
        Ok(())
    } else {
        Err(r)
    }
}

fn call<T>(f: Option<T>) -> Result<T, Status> {
    f.ok_or(amdsmi::FAIL_LOAD_SYMBOL)
}

impl Library {
    /// dlopen + dlsym + amdsmi_init(GPUs), then the library version picks the struct layouts.
    pub fn open(path: &str) -> Result<Library, LoadError> {
        unsafe {
            let lib = open_library(path, "AMD SMI").map_err(LoadError::Unavailable)?;
            let init: FnInit = required!(lib, "amdsmi_init", "AMD SMI library", LoadError::Unavailable);
            let shut_down: FnVoid = required!(lib, "amdsmi_shut_down", "AMD SMI library", LoadError::Unavailable);
            let lib_version: FnBuf = required!(lib, "amdsmi_get_lib_version", "AMD SMI library", LoadError::Unavailable);
            let status_string: Option<FnStatusString> = optional(lib, &["amdsmi_status_code_to_string"]);
            let text = |r: Status| status_text(status_string, r);
            let r = init(INIT_AMD_GPUS);
            if r != amdsmi::SUCCESS {
                let msg = text(r);
                dlclose(lib);
                return Err(LoadError::InitFailed(r, msg));
            }
            // Zeroed and oversized: the version struct is 16 or 24 bytes plus a pointer by generation.
            let mut v = [0u8; 64];
            let r = lib_version(v.as_mut_ptr());
            let word = |i: usize| u32::from_le_bytes([v[i * 4], v[i * 4 + 1], v[i * 4 + 2], v[i * 4 + 3]]);
            if r != amdsmi::SUCCESS {
                let msg = text(r);
                shut_down();
                dlclose(lib);
                return Err(LoadError::InitFailed(r, format!("amdsmi_get_lib_version: {msg}")));
            }
            let version = format!("{}.{}.{}", word(0), word(1), word(2));
            let Some(abi) = amdsmi::abi_for(word(0)) else {
                shut_down();
                dlclose(lib);
                return Err(LoadError::UnknownAbi(format!(
                    "AMD SMI library {version} is of generation {}, whose struct layouts this build does not know (it reads 24.x-25.x and 26.x)",
                    word(0)
                )));
            };
            Ok(Library {
                lib,
                path: path.to_string(),
                abi,
                version,
                shut_down,
                status_string,
                sockets: required!(lib, "amdsmi_get_socket_handles", "AMD SMI library", LoadError::Unavailable),
                processors: required!(lib, "amdsmi_get_processor_handles", "AMD SMI library", LoadError::Unavailable),
                asic: optional(lib, &["amdsmi_get_gpu_asic_info"]),
                uuid: optional(lib, &["amdsmi_get_gpu_device_uuid"]),
                bdf: optional(lib, &["amdsmi_get_gpu_device_bdf"]),
                activity: optional(lib, &["amdsmi_get_gpu_activity"]),
                memory_total: optional(lib, &["amdsmi_get_gpu_memory_total"]),
                memory_usage: optional(lib, &["amdsmi_get_gpu_memory_usage"]),
                temp: optional(lib, &["amdsmi_get_temp_metric"]),
                power: optional(lib, &["amdsmi_get_power_info"]),
                power_cap: optional(lib, &["amdsmi_get_power_cap_info"]),
                clock: optional(lib, &["amdsmi_get_clock_info"]),
                ecc: optional(lib, &["amdsmi_get_gpu_total_ecc_count"]),
                energy: optional(lib, &["amdsmi_get_energy_count"]),
                process_list: optional(lib, &["amdsmi_get_gpu_process_list"]),
            })
        }
    }

    pub fn error_text(&self, r: Status) -> String {
        status_text(self.status_string, r)
    }

    pub fn close(&mut self) {
        unsafe {
            (self.shut_down)();
            if !self.lib.is_null() {
                dlclose(self.lib);
                self.lib = std::ptr::null_mut();
            }
        }
    }

    fn buffer(&self, f: Option<FnProcBuf>, h: Handle, size: usize) -> Result<Vec<u8>, Status> {
        let f = call(f)?;
        let mut b = vec![0u8; size.max(STRUCT_BUFFER)];
        ok(unsafe { f(h.0 as Proc, b.as_mut_ptr()) })?;
        b.truncate(size);
        Ok(b)
    }
}

fn status_text(f: Option<FnStatusString>, r: Status) -> String {
    if let Some(f) = f {
        let mut p: *const c_char = std::ptr::null();
        if unsafe { f(r, &mut p) } == amdsmi::SUCCESS && !p.is_null() {
            return unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned();
        }
    }
    amdsmi::status_name(r).to_string()
}

impl Api for Library {
    fn abi(&self) -> Abi {
        self.abi
    }
    fn processors(&self) -> Result<Vec<Handle>, Status> {
        let mut n: u32 = 0;
        ok(unsafe { (self.sockets)(&mut n, std::ptr::null_mut()) })?;
        let mut sockets = vec![std::ptr::null_mut(); n as usize];
        ok(unsafe { (self.sockets)(&mut n, sockets.as_mut_ptr()) })?;
        sockets.truncate(n as usize);
        let mut out = Vec::new();
        for s in sockets {
            let mut count: u32 = 0;
            ok(unsafe { (self.processors)(s, &mut count, std::ptr::null_mut()) })?;
            let mut handles = vec![std::ptr::null_mut(); count as usize];
            ok(unsafe { (self.processors)(s, &mut count, handles.as_mut_ptr()) })?;
            out.extend(handles.into_iter().take(count as usize).map(|p| Handle(p as usize)));
        }
        Ok(out)
    }
    fn market_name(&self, h: Handle) -> Result<String, Status> {
        // market_name is the first member in every generation; at most 256 bytes.
        let b = self.buffer(self.asic, h, 256)?;
        let chars: Vec<c_char> = b.iter().map(|&x| x as c_char).collect();
        Ok(c_buf_to_string(&chars))
    }
    fn uuid(&self, h: Handle) -> Result<String, Status> {
        let f = call(self.uuid)?;
        let mut buf = [0 as c_char; UUID_BUFFER];
        let mut len = buf.len() as c_uint;
        ok(unsafe { f(h.0 as Proc, &mut len, buf.as_mut_ptr()) })?;
        buf[UUID_BUFFER - 1] = 0;
        Ok(c_buf_to_string(&buf))
    }
    fn bdf(&self, h: Handle) -> Result<u64, Status> {
        let f = call(self.bdf)?;
        let mut v: u64 = 0;
        ok(unsafe { f(h.0 as Proc, &mut v) })?;
        Ok(v)
    }
    fn activity(&self, h: Handle) -> Result<(u32, u32), Status> {
        let f = call(self.activity)?;
        let mut u = EngineUsage { gfx_activity: 0, umc_activity: 0, mm_activity: 0, reserved: [0; 13] };
        ok(unsafe { f(h.0 as Proc, &mut u) })?;
        Ok((u.gfx_activity, u.umc_activity))
    }
    fn vram_total(&self, h: Handle) -> Result<u64, Status> {
        let f = call(self.memory_total)?;
        let mut v: u64 = 0;
        ok(unsafe { f(h.0 as Proc, MEM_VRAM, &mut v) })?;
        Ok(v)
    }
    fn vram_used(&self, h: Handle) -> Result<u64, Status> {
        let f = call(self.memory_usage)?;
        let mut v: u64 = 0;
        ok(unsafe { f(h.0 as Proc, MEM_VRAM, &mut v) })?;
        Ok(v)
    }
    fn temperature(&self, h: Handle, sensor: u32) -> Result<i64, Status> {
        let f = call(self.temp)?;
        let mut t: i64 = 0;
        // Metric 0: AMDSMI_TEMP_CURRENT.
        ok(unsafe { f(h.0 as Proc, sensor, 0, &mut t) })?;
        Ok(t)
    }
    fn power_info(&self, h: Handle) -> Result<Vec<u8>, Status> {
        self.buffer(self.power, h, self.abi.layout().power_info_size)
    }
    fn power_cap_uw(&self, h: Handle) -> Result<u64, Status> {
        let f = call(self.power_cap)?;
        let mut c = PowerCapInfo { power_cap: 0, default_power_cap: 0, dpm_cap: 0, min_power_cap: 0, max_power_cap: 0, reserved: [0; 3] };
        ok(unsafe { f(h.0 as Proc, 0, &mut c) })?;
        Ok(c.power_cap)
    }
    fn clock_mhz(&self, h: Handle, clock: u32) -> Result<u32, Status> {
        let f = call(self.clock)?;
        let mut c = ClkInfo { clk: 0, min_clk: 0, max_clk: 0, clk_locked: 0, clk_deep_sleep: 0, reserved: [0; 4] };
        ok(unsafe { f(h.0 as Proc, clock, &mut c) })?;
        Ok(c.clk)
    }
    fn ecc(&self, h: Handle) -> Result<(u64, u64), Status> {
        let f = call(self.ecc)?;
        let mut e = ErrorCount { correctable: 0, uncorrectable: 0, deferred: 0, reserved: [0; 5] };
        ok(unsafe { f(h.0 as Proc, &mut e) })?;
        Ok((e.correctable, e.uncorrectable))
    }
    fn energy(&self, h: Handle) -> Result<(u64, f32), Status> {
        let f = call(self.energy)?;
        let (mut acc, mut resolution, mut timestamp) = (0u64, 0f32, 0u64);
        ok(unsafe { f(h.0 as Proc, &mut acc, &mut resolution, &mut timestamp) })?;
        Ok((acc, resolution))
    }
    fn processes(&self, h: Handle) -> Result<Vec<Vec<u8>>, Status> {
        let f = call(self.process_list)?;
        let size = self.abi.layout().proc_info_size;
        let mut b = vec![0u8; size * MAX_PROCESSES];
        let mut n = MAX_PROCESSES as u32;
        match unsafe { f(h.0 as Proc, &mut n, b.as_mut_ptr()) } {
            // More processes than room: the first MAX_PROCESSES are filled in.
            amdsmi::SUCCESS | amdsmi::OUT_OF_RESOURCES => {}
            r => return Err(r),
        }
        let n = (n as usize).min(MAX_PROCESSES);
        Ok(b.chunks_exact(size).take(n).map(|c| c.to_vec()).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs against the library named by INFERTEL_TEST_AMDSMI_LIBRARY (the fake one in `npm test`,
    /// ROCm's on an AMD machine). Skipped when the variable is unset.
    #[test]
    fn polls_the_library_named_by_the_environment() {
        let Ok(path) = std::env::var("INFERTEL_TEST_AMDSMI_LIBRARY") else {
            eprintln!("INFERTEL_TEST_AMDSMI_LIBRARY unset: skipped");
            return;
        };
        let mut lib = match Library::open(&path) {
            Ok(l) => l,
            Err(LoadError::Unavailable(m)) | Err(LoadError::UnknownAbi(m)) => panic!("unavailable: {m}"),
            Err(LoadError::InitFailed(r, m)) => panic!("init failed {r}: {m}"),
        };
        let handles = lib.processors().expect("processors");
        assert!(!handles.is_empty(), "no GPUs");
        let r = amdsmi::poll(&lib, &handles);
        eprintln!("AMD SMI {} ({:?})", lib.version, lib.abi);
        for d in &r {
            eprintln!("{d:?}");
            assert!(d.error.is_none());
            assert!(d.memory_total.unwrap_or(0) > 0);
        }
        lib.close();
    }
}
