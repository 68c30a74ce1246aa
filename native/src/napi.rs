//! The few Node-API functions the binding uses, declared by hand (the napi crates are not
//! reachable here). Node's executable exports them; the loader binds them at require() time.
#![allow(non_camel_case_types)]

use std::ffi::{c_char, c_int, c_void};

#[repr(C)]
pub struct napi_env__ {
    _p: [u8; 0],
}
#[repr(C)]
pub struct napi_value__ {
    _p: [u8; 0],
}
#[repr(C)]
pub struct napi_callback_info__ {
    _p: [u8; 0],
}
#[repr(C)]
pub struct napi_deferred__ {
    _p: [u8; 0],
}
#[repr(C)]
pub struct napi_async_work__ {
    _p: [u8; 0],
}
pub type napi_env = *mut napi_env__;
pub type napi_value = *mut napi_value__;
pub type napi_callback_info = *mut napi_callback_info__;
pub type napi_deferred = *mut napi_deferred__;
pub type napi_async_work = *mut napi_async_work__;
#[repr(C)]
pub struct napi_threadsafe_function__ {
    _p: [u8; 0],
}
pub type napi_threadsafe_function = *mut napi_threadsafe_function__;
pub type napi_finalize = Option<unsafe extern "C" fn(napi_env, *mut c_void, *mut c_void)>;
pub type napi_threadsafe_function_call_js = Option<unsafe extern "C" fn(napi_env, napi_value, *mut c_void, *mut c_void)>;
pub type napi_status = c_int;
pub type napi_callback = Option<unsafe extern "C" fn(napi_env, napi_callback_info) -> napi_value>;
pub type napi_async_execute_callback = Option<unsafe extern "C" fn(napi_env, *mut c_void)>;
pub type napi_async_complete_callback = Option<unsafe extern "C" fn(napi_env, napi_status, *mut c_void)>;

/// napi_valuetype values used here.
pub const NAPI_BOOLEAN: c_int = 2;
pub const NAPI_NUMBER: c_int = 3;
pub const NAPI_FUNCTION: c_int = 7;
pub const NAPI_STRING: c_int = 4;

/// napi_property_descriptor
#[repr(C)]
pub struct napi_property_descriptor {
    pub utf8name: *const c_char,
    pub name: napi_value,
    pub method: napi_callback,
    pub getter: napi_callback,
    pub setter: napi_callback,
    pub value: napi_value,
    pub attributes: c_int,
    pub data: *mut c_void,
}
/// napi_writable | napi_enumerable | napi_configurable: a plain data property.
pub const NAPI_DEFAULT_JSPROPERTY: c_int = 1 | 2 | 4;

extern "C" {
    pub fn napi_define_properties(env: napi_env, object: napi_value, count: usize, properties: *const napi_property_descriptor) -> napi_status;
    pub fn napi_create_object(env: napi_env, result: *mut napi_value) -> napi_status;
    pub fn napi_set_named_property(env: napi_env, object: napi_value, name: *const c_char, value: napi_value) -> napi_status;
    pub fn napi_create_double(env: napi_env, value: f64, result: *mut napi_value) -> napi_status;
    pub fn napi_create_string_utf8(env: napi_env, s: *const c_char, length: usize, result: *mut napi_value) -> napi_status;
    pub fn napi_create_array_with_length(env: napi_env, length: usize, result: *mut napi_value) -> napi_status;
    pub fn napi_set_element(env: napi_env, object: napi_value, index: u32, value: napi_value) -> napi_status;
    pub fn napi_get_null(env: napi_env, result: *mut napi_value) -> napi_status;
    pub fn napi_get_boolean(env: napi_env, value: bool, result: *mut napi_value) -> napi_status;
    pub fn napi_create_error(env: napi_env, code: napi_value, msg: napi_value, result: *mut napi_value) -> napi_status;
    pub fn napi_throw(env: napi_env, error: napi_value) -> napi_status;
    pub fn napi_create_function(
        env: napi_env,
        name: *const c_char,
        length: usize,
        cb: napi_callback,
        data: *mut c_void,
        result: *mut napi_value,
    ) -> napi_status;
    pub fn napi_get_cb_info(
        env: napi_env,
        info: napi_callback_info,
        argc: *mut usize,
        argv: *mut napi_value,
        this_arg: *mut napi_value,
        data: *mut *mut c_void,
    ) -> napi_status;
    pub fn napi_typeof(env: napi_env, value: napi_value, result: *mut c_int) -> napi_status;
    pub fn napi_get_value_bool(env: napi_env, value: napi_value, result: *mut bool) -> napi_status;
    pub fn napi_get_value_double(env: napi_env, value: napi_value, result: *mut f64) -> napi_status;
    pub fn napi_get_value_string_utf8(env: napi_env, value: napi_value, buf: *mut c_char, bufsize: usize, result: *mut usize) -> napi_status;
    pub fn napi_create_promise(env: napi_env, deferred: *mut napi_deferred, promise: *mut napi_value) -> napi_status;
    pub fn napi_resolve_deferred(env: napi_env, deferred: napi_deferred, resolution: napi_value) -> napi_status;
    pub fn napi_reject_deferred(env: napi_env, deferred: napi_deferred, rejection: napi_value) -> napi_status;
    pub fn napi_create_async_work(
        env: napi_env,
        async_resource: napi_value,
        async_resource_name: napi_value,
        execute: napi_async_execute_callback,
        complete: napi_async_complete_callback,
        data: *mut c_void,
        result: *mut napi_async_work,
    ) -> napi_status;
    pub fn napi_create_threadsafe_function(
        env: napi_env,
        func: napi_value,
        async_resource: napi_value,
        async_resource_name: napi_value,
        max_queue_size: usize,
        initial_thread_count: usize,
        thread_finalize_data: *mut c_void,
        thread_finalize_cb: napi_finalize,
        context: *mut c_void,
        call_js_cb: napi_threadsafe_function_call_js,
        result: *mut napi_threadsafe_function,
    ) -> napi_status;
    pub fn napi_call_threadsafe_function(func: napi_threadsafe_function, data: *mut c_void, is_blocking: c_int) -> napi_status;
    pub fn napi_release_threadsafe_function(func: napi_threadsafe_function, mode: c_int) -> napi_status;
    pub fn napi_unref_threadsafe_function(env: napi_env, func: napi_threadsafe_function) -> napi_status;
    pub fn napi_call_function(env: napi_env, recv: napi_value, func: napi_value, argc: usize, argv: *const napi_value, result: *mut napi_value) -> napi_status;
    pub fn napi_get_undefined(env: napi_env, result: *mut napi_value) -> napi_status;
    pub fn napi_create_arraybuffer(env: napi_env, byte_length: usize, data: *mut *mut c_void, result: *mut napi_value) -> napi_status;
    pub fn napi_create_typedarray(
        env: napi_env,
        kind: c_int,
        length: usize,
        arraybuffer: napi_value,
        byte_offset: usize,
        result: *mut napi_value,
    ) -> napi_status;
    pub fn napi_create_buffer_copy(env: napi_env, length: usize, data: *const c_void, result_data: *mut *mut c_void, result: *mut napi_value) -> napi_status;
    pub fn napi_get_buffer_info(env: napi_env, value: napi_value, data: *mut *mut c_void, length: *mut usize) -> napi_status;
    pub fn napi_is_buffer(env: napi_env, value: napi_value, result: *mut bool) -> napi_status;
    pub fn napi_queue_async_work(env: napi_env, work: napi_async_work) -> napi_status;
    pub fn napi_delete_async_work(env: napi_env, work: napi_async_work) -> napi_status;
}

/// Small helpers that turn Rust values into JS values. They ignore napi_status: on failure the
/// value is simply missing, which the TS side treats as absent.
pub struct Js {
    pub env: napi_env,
}

impl Js {
    pub fn null(&self) -> napi_value {
        let mut v = std::ptr::null_mut();
        unsafe { napi_get_null(self.env, &mut v) };
        v
    }
    pub fn num(&self, x: f64) -> napi_value {
        let mut v = std::ptr::null_mut();
        unsafe { napi_create_double(self.env, x, &mut v) };
        v
    }
    pub fn opt_num<T: Into<f64>>(&self, x: Option<T>) -> napi_value {
        match x {
            Some(x) => self.num(x.into()),
            None => self.null(),
        }
    }
    pub fn bool(&self, b: bool) -> napi_value {
        let mut v = std::ptr::null_mut();
        unsafe { napi_get_boolean(self.env, b, &mut v) };
        v
    }
    pub fn str(&self, s: &str) -> napi_value {
        let mut v = std::ptr::null_mut();
        unsafe { napi_create_string_utf8(self.env, s.as_ptr() as *const c_char, s.len(), &mut v) };
        v
    }
    pub fn opt_str(&self, s: Option<&str>) -> napi_value {
        match s {
            Some(s) => self.str(s),
            None => self.null(),
        }
    }
    pub fn object(&self) -> napi_value {
        let mut v = std::ptr::null_mut();
        unsafe { napi_create_object(self.env, &mut v) };
        v
    }
    /// `key` must end in a NUL byte.
    pub fn set(&self, obj: napi_value, key: &'static str, value: napi_value) {
        debug_assert!(key.ends_with('\0'));
        unsafe { napi_set_named_property(self.env, obj, key.as_ptr() as *const c_char, value) };
    }
    pub fn array(&self, items: Vec<napi_value>) -> napi_value {
        let mut arr = std::ptr::null_mut();
        unsafe {
            napi_create_array_with_length(self.env, items.len(), &mut arr);
            for (i, v) in items.into_iter().enumerate() {
                napi_set_element(self.env, arr, i as u32, v);
            }
        }
        arr
    }
    /// Property keys made once and reused for every object of a batch: setting a property by a
    /// ready key skips the UTF-8 decoding and internalising that napi_set_named_property repeats.
    pub fn keys<const N: usize>(&self, names: [&str; N]) -> [napi_value; N] {
        names.map(|n| self.str(n))
    }
    /// A new object with all `keys` set to `values` in one N-API call.
    pub fn object_with<const N: usize>(&self, keys: &[napi_value; N], values: [napi_value; N]) -> napi_value {
        let o = self.object();
        let props: Vec<napi_property_descriptor> = keys
            .iter()
            .zip(values)
            .map(|(&name, value)| napi_property_descriptor {
                utf8name: std::ptr::null(),
                name,
                method: None,
                getter: None,
                setter: None,
                value,
                attributes: NAPI_DEFAULT_JSPROPERTY,
                data: std::ptr::null_mut(),
            })
            .collect();
        unsafe { napi_define_properties(self.env, o, props.len(), props.as_ptr()) };
        o
    }
    pub fn error(&self, code: &str, message: &str) -> napi_value {
        let mut e = std::ptr::null_mut();
        unsafe { napi_create_error(self.env, self.str(code), self.str(message), &mut e) };
        e
    }
}
