//! One wasmtime engine with the linkers of every kind, and the pooling allocator's two ways of handing a
//! freed linear memory to the next instance.
//!
//! An [`Engine`](super::Engine) runs two of these when it pools instances: one for most guests, which
//! resets only the pages an instance wrote, and one for guests whose initial memory carries a large image
//! (an interpreter's heap, snapshotted at build time: Python, JavaScript), which resets a fixed span in
//! place. Both compile alike, so one compiled artifact loads into either.

use crate::abi::proxy::ProxyState;
use crate::abi::spin1::Spin1State;
use crate::host::{ComponentState, ModuleState};
use crate::limits::MAX_TABLE_ELEMENTS;
use wasmtime::component::Linker as ComponentLinker;
use wasmtime::Linker as ModuleLinker;

/// A wasmtime engine and the linkers functions are pre-instantiated with; a function's stores come from
/// the engine it was prepared in.
pub(super) struct Runtime {
    pub(super) wasmtime: wasmtime::Engine,
    pub(super) component_linker: ComponentLinker<ComponentState>,
    pub(super) module_linker: ModuleLinker<ModuleState>,
    pub(super) proxy_linker: ModuleLinker<ProxyState>,
    pub(super) spin1_linker: ModuleLinker<Spin1State>,
}

impl Runtime {
    pub(super) fn new(wasmtime: wasmtime::Engine) -> wasmtime::Result<Self> {
        let mut component_linker = ComponentLinker::new(&wasmtime);
        wasmtime_wasi::p2::add_to_linker_async(&mut component_linker)?;
        wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut component_linker)?;
        wasmtime_wasi_config::add_to_linker(&mut component_linker, |s: &mut ComponentState| {
            wasmtime_wasi_config::WasiConfig::from(&*s.config)
        })?;
        crate::host::capabilities::add_to_linker(&mut component_linker)?;
        crate::host::spin::add_to_linker(&mut component_linker)?;
        let module_linker = wasi_module_linker(&wasmtime, |s: &mut ModuleState| &mut s.wasi)?;
        let proxy_linker = wasi_module_linker(&wasmtime, |s: &mut ProxyState| &mut s.wasi)?;
        let mut spin1_linker = wasi_module_linker(&wasmtime, |s: &mut Spin1State| &mut s.wasi)?;
        crate::abi::spin1::add_to_linker(&mut spin1_linker)?;
        Ok(Self {
            wasmtime,
            component_linker,
            module_linker,
            proxy_linker,
            spin1_linker,
        })
    }
}

/// A linker for core modules of store data `T` with WASI preview1, and preview0 as `wasi_unstable` for
/// older modules (early WAGI, old toolchains).
fn wasi_module_linker<T: Send + 'static>(
    engine: &wasmtime::Engine,
    wasi: fn(&mut T) -> &mut wasmtime_wasi::p1::WasiP1Ctx,
) -> wasmtime::Result<ModuleLinker<T>> {
    let mut linker = ModuleLinker::new(engine);
    wasmtime_wasi::p1::add_to_linker_async(&mut linker, wasi)?;
    wasmtime_wasi::p0::add_to_linker_async(&mut linker, wasi)?;
    Ok(linker)
}

/// How a freed linear memory is made ready for the slot's next instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Reset {
    /// Reset the pages the instance wrote, as Linux's `PAGEMAP_SCAN` reports them, in place (up to
    /// [`MEMORY_KEEP_RESIDENT`]), and hand the rest back to the kernel.
    Written,
    /// Reset the first [`MEMORY_KEEP_RESIDENT`] bytes in place whether written or not, and hand the
    /// rest back to the kernel.
    Span,
}

/// How much of each freed table and stack slot stays resident for the next instance.
const KEEP_RESIDENT: usize = 128 * 1024;

/// How much of each freed linear memory may be reset in place (zeroed, or copied back from the module's
/// initial image) rather than handed back to the kernel. Handed back, every page an interpreter writes
/// while it starts faults again in the slot's next instance: that was half of a Python request's CPU.
///
/// [`Reset::Written`], measured at 16 connections: the JavaScript hello-world 1,236 to 2,359 req/s,
/// Python 382 to 510, a C component with an 8 MiB memory 8,639 to 10,826, the small C ones 6 to 8%
/// faster. Python's writes are scattered: they outrun the 32 regions one scan reports, and the pages
/// past those are still handed back. [`Reset::Span`] made Python 802 but halved that C component (9,300
/// to 5,131), since it copies 16 MiB whatever the guest touched: hence one engine for each.
const MEMORY_KEEP_RESIDENT: usize = 16 << 20;

/// Freed slots that keep their memory (up to [`MEMORY_KEEP_RESIDENT`] each) for the module that last
/// used them, beyond those in use; wasmtime's default is 100. This bounds what idle slots hold.
const WARM_SLOTS: u32 = 32;

/// The pooling allocator's layout for `slots` instances. Components are made of several core instances
/// (an interpreter's component, a dozen or more), so those pools are deeper; everything is address space
/// reserved once, and only what instances touch becomes resident.
pub(super) fn pool(slots: u32, reset: Reset) -> wasmtime::InstanceAllocationStrategy {
    let mut pool = wasmtime::PoolingAllocationConfig::new();
    pool.total_component_instances(slots)
        .total_core_instances(slots.saturating_mul(16))
        .total_memories(slots.saturating_mul(2))
        .total_tables(slots.saturating_mul(4))
        .total_stacks(slots)
        .max_component_instance_size(4 << 20)
        .max_core_instance_size(1 << 20)
        .max_memories_per_module(2)
        .max_tables_per_module(4)
        .table_elements(MAX_TABLE_ELEMENTS)
        .max_unused_warm_slots(WARM_SLOTS)
        // Tables and stacks keep their first pages too, zeroed rather than returned to the kernel: no
        // madvise and no TLB shootdown on the other cores.
        .table_keep_resident(KEEP_RESIDENT)
        .async_stack_keep_resident(KEEP_RESIDENT);
    match reset {
        // Without the scan (Linux before 6.7) the first bytes kept would be reset whether written or
        // not, which for a large memory costs more than the faults it saves: keep what tables keep.
        Reset::Written if !wasmtime::PoolingAllocationConfig::is_pagemap_scan_available() => {
            pool.linear_memory_keep_resident(KEEP_RESIDENT)
        }
        Reset::Written => pool
            .pagemap_scan(wasmtime::Enabled::Yes)
            .linear_memory_keep_resident(MEMORY_KEEP_RESIDENT),
        Reset::Span => pool
            .pagemap_scan(wasmtime::Enabled::No)
            .linear_memory_keep_resident(MEMORY_KEEP_RESIDENT),
    };
    wasmtime::InstanceAllocationStrategy::Pooling(pool)
}
