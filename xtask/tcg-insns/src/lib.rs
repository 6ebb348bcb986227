//! A QEMU TCG plugin (plugin API version 1: QEMU 7.2, Debian 12's) for
//! `cargo xtask bench --insns`. It counts how often each translated block
//! of guest kernel code runs, and the instructions run in user space; each
//! time the guest runs the block at `trigger=ADDR` (a page of its own that
//! holds one `ret`), it writes what was counted since the last time to
//! `OUT.N` (N = 0, 1, ...) and starts over. A dump's lines are
//! `user <instructions>`, then `<block address hex> <instructions in the
//! block> <runs>` for every kernel block that ran.
//!
//! QEMU runs each iteration of a `rep` string instruction as one
//! instruction, as `-icount` counts it.

use std::collections::HashMap;
use std::ffi::{c_char, c_int, c_uint, c_void, CStr};
use std::fs::File;
use std::io::{BufWriter, Write};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock};

#[no_mangle]
pub static qemu_plugin_version: c_int = 1;

/// `struct qemu_plugin_tb`: opaque.
#[repr(C)]
pub struct Tb {
    _opaque: [u8; 0],
}

type TbTransCb = extern "C" fn(id: u64, tb: *mut Tb);
type VcpuUdataCb = extern "C" fn(vcpu: c_uint, udata: *mut c_void);

/// `QEMU_PLUGIN_CB_NO_REGS` and `QEMU_PLUGIN_INLINE_ADD_U64`.
const NO_REGS: c_int = 0;
const INLINE_ADD_U64: c_int = 0;

extern "C" {
    fn qemu_plugin_register_vcpu_tb_trans_cb(id: u64, cb: TbTransCb);
    fn qemu_plugin_register_vcpu_tb_exec_cb(
        tb: *mut Tb,
        cb: VcpuUdataCb,
        flags: c_int,
        udata: *mut c_void,
    );
    fn qemu_plugin_register_vcpu_tb_exec_inline(tb: *mut Tb, op: c_int, ptr: *mut c_void, imm: u64);
    fn qemu_plugin_tb_n_insns(tb: *const Tb) -> usize;
    fn qemu_plugin_tb_vaddr(tb: *const Tb) -> u64;
}

/// x86-64 kernel addresses start here (the top half of the address space).
const KERNEL_START: u64 = 0xffff_8000_0000_0000;

struct Plugin {
    out: String,
    trigger: u64,
    /// Runs of each kernel block, by (address, instructions). The counters
    /// are leaked: QEMU adds to them in place for as long as it runs.
    blocks: Mutex<HashMap<(u64, u64), &'static AtomicU64>>,
    user: AtomicU64,
    dumps: AtomicUsize,
}

static PLUGIN: OnceLock<Plugin> = OnceLock::new();

fn plugin() -> &'static Plugin {
    PLUGIN.get().expect("installed")
}

extern "C" fn on_translate(_id: u64, tb: *mut Tb) {
    let p = plugin();
    // SAFETY: `tb` is the block QEMU is translating, valid during this call.
    let (vaddr, insns) = unsafe { (qemu_plugin_tb_vaddr(tb), qemu_plugin_tb_n_insns(tb) as u64) };
    let (counter, add): (&AtomicU64, u64) = if vaddr >= KERNEL_START {
        let mut blocks = p.blocks.lock().unwrap_or_else(|e| e.into_inner());
        let counter = *blocks
            .entry((vaddr, insns))
            .or_insert_with(|| Box::leak(Box::new(AtomicU64::new(0))));
        (counter, 1)
    } else {
        (&p.user, insns)
    };
    // SAFETY: the counter lives for the rest of the process; QEMU adds
    // `add` to it each time the block runs.
    unsafe {
        qemu_plugin_register_vcpu_tb_exec_inline(tb, INLINE_ADD_U64, counter.as_ptr().cast(), add);
        if vaddr == p.trigger {
            qemu_plugin_register_vcpu_tb_exec_cb(tb, on_trigger, NO_REGS, std::ptr::null_mut());
        }
    }
}

extern "C" fn on_trigger(_vcpu: c_uint, _udata: *mut c_void) {
    let p = plugin();
    let n = p.dumps.fetch_add(1, Ordering::Relaxed);
    let path = format!("{}.{n}", p.out);
    let blocks = p.blocks.lock().unwrap_or_else(|e| e.into_inner());
    let written = File::create(&path).and_then(|file| {
        let mut out = BufWriter::new(file);
        writeln!(out, "user {}", p.user.swap(0, Ordering::Relaxed))?;
        for (&(vaddr, insns), counter) in blocks.iter() {
            let runs = counter.swap(0, Ordering::Relaxed);
            if runs > 0 {
                writeln!(out, "{vaddr:x} {insns} {runs}")?;
            }
        }
        out.flush()
    });
    if let Err(e) = written {
        eprintln!("tcg-insns: cannot write {path}: {e}");
    }
}

/// Takes `out=PATH` and `trigger=HEX`.
///
/// # Safety
/// Called by QEMU with `argc` valid C strings in `argv`.
#[no_mangle]
pub unsafe extern "C" fn qemu_plugin_install(
    id: u64,
    _info: *const c_void,
    argc: c_int,
    argv: *const *const c_char,
) -> c_int {
    let (mut out, mut trigger) = (None, None);
    for i in 0..argc.max(0) as usize {
        // SAFETY: QEMU passes argc valid, NUL-terminated strings.
        let arg = unsafe { CStr::from_ptr(*argv.add(i)) }.to_string_lossy();
        if let Some(path) = arg.strip_prefix("out=") {
            out = Some(path.to_string());
        } else if let Some(hex) = arg.strip_prefix("trigger=") {
            trigger = u64::from_str_radix(hex.trim_start_matches("0x"), 16).ok();
        }
    }
    let (Some(out), Some(trigger)) = (out, trigger) else {
        eprintln!("tcg-insns: needs out=PATH and trigger=HEX");
        return 1;
    };
    let installed = PLUGIN.set(Plugin {
        out,
        trigger,
        blocks: Mutex::new(HashMap::new()),
        user: AtomicU64::new(0),
        dumps: AtomicUsize::new(0),
    });
    if installed.is_err() {
        return 1;
    }
    // SAFETY: registering a callback with the id QEMU gave us.
    unsafe { qemu_plugin_register_vcpu_tb_trans_cb(id, on_translate) };
    0
}
