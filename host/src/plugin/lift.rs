//! The fast way back from a `transform` call: the guest's `output` lifted with one `memcpy` per
//! list, instead of the element-by-element copy that `bindgen!`'s generated types get; or, when
//! the call lends ([`super::lend`]), its values left where they are, lifted as their place.
//!
//! `transform` is called through a [`TypedFunc`] whose result type is [`Output`] here: the
//! same WIT `output` record (the type check at bind time proves it), with `values.data`,
//! `values.ends` and `origins` lifted as [`Bytes`] and [`U32s`]. Those wrap wasmtime's own
//! bounds-checked [`WasmList`] lift (pointer and length inside the guest's memory, alignment,
//! fuel), then copy the checked range out in one go. A guest that returns a list outside its
//! memory gets wasmtime's error ("list pointer/length out of bounds of memory"), which the
//! stage reports as a trap naming the plugin; it never reads past the memory.
//!
//! This leans on wasmtime's `#[doc(hidden)]` lifting API (`ComponentType`, `Lift`,
//! `__internal`), the one its own derive macros use; it is pinned with the wasmtime version.

use wasmtime::ValRaw;
use wasmtime::component::__internal::{CanonicalAbiInfo, InstanceType, InterfaceType, LiftContext};
use wasmtime::component::{ComponentType, Func, Lift, TypedFunc, WasmList};

use super::bindings::v0_1::types;

/// A `list<u8>` lifted with one copy, or, while the call lends ([`lending`]) and the list is
/// big enough, left where it is in the guest's memory (see [`super::lend`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Bytes {
    /// Copied out.
    Copied(Vec<u8>),
    /// Left in place: `len` bytes at host address `addr`, inside the instance's memory.
    InPlace { addr: usize, len: usize },
}

impl Bytes {
    fn lift(bytes: &[u8]) -> Self {
        if bytes.len() >= super::lend::LEND_MIN && LENDING.get() {
            return Bytes::InPlace {
                addr: bytes.as_ptr() as usize,
                len: bytes.len(),
            };
        }
        Bytes::Copied(bytes.to_vec())
    }
}

thread_local! {
    /// Set while a call whose output may be lent is lifted.
    static LENDING: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Lets the next lifts on this thread leave big `list<u8>`s in place, until dropped.
pub(crate) struct Lending(());

/// See [`Lending`].
pub(crate) fn lending() -> Lending {
    LENDING.set(true);
    Lending(())
}

impl Drop for Lending {
    fn drop(&mut self) {
        LENDING.set(false);
    }
}

/// A `list<u32>` lifted with one copy (the canonical ABI's little-endian layout is the host's).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct U32s(pub Vec<u32>);

/// The guest memory range `[ptr, ptr + len * size)` of a list already checked by `WasmList`.
fn range<'a>(cx: &LiftContext<'a>, ptr: u32, len: u32, size: usize) -> &'a [u8] {
    let (ptr, len) = (ptr as usize, len as usize * size);
    &cx.memory()[ptr..ptr + len]
}

fn pointer_pair(bytes: &[u8]) -> (u32, u32) {
    let word = |i: usize| u32::from_le_bytes([bytes[i], bytes[i + 1], bytes[i + 2], bytes[i + 3]]);
    (word(0), word(4))
}

impl U32s {
    fn lift(bytes: &[u8]) -> Self {
        U32s(u32s_from(bytes))
    }
}

/// The little-endian `u32`s of `bytes` (a whole number of them), copied in one go where the
/// host is little-endian too (x86-64, aarch64): the element-by-element loop it replaces was
/// about 3% of `sluice bench plugins`' samples, for lists a 25th of the values' size.
fn u32s_from(bytes: &[u8]) -> Vec<u32> {
    let n = bytes.len() / 4;
    debug_assert_eq!(bytes.len(), n * 4);
    if cfg!(target_endian = "little") {
        let mut out = Vec::<u32>::with_capacity(n);
        // SAFETY: `out` has room for `n` u32s, which is `n * 4` bytes; the source is `n * 4`
        // bytes long and does not overlap a fresh allocation; every bit pattern is a u32, and
        // on a little-endian host the in-memory layout is the canonical ABI's.
        unsafe {
            std::ptr::copy_nonoverlapping(bytes.as_ptr(), out.as_mut_ptr().cast::<u8>(), n * 4);
            out.set_len(n);
        }
        out
    } else {
        bytes
            .chunks_exact(4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect()
    }
}

macro_rules! fast_list {
    ($ty:ident, $elem:ty, $size:expr, $copy:expr) => {
        // SAFETY: the ABI, flat representation and type check are those of `[T]` (a list),
        // which is what `WasmList<T>` uses too.
        unsafe impl ComponentType for $ty {
            type Lower = [ValRaw; 2];
            const ABI: CanonicalAbiInfo = CanonicalAbiInfo::POINTER_PAIR;

            fn typecheck(ty: &InterfaceType, types: &InstanceType<'_>) -> wasmtime::Result<()> {
                <[$elem] as ComponentType>::typecheck(ty, types)
            }
        }

        // SAFETY: every read is bounds-checked first by `WasmList`'s own lift.
        unsafe impl Lift for $ty {
            fn linear_lift_from_flat(
                cx: &mut LiftContext<'_>,
                ty: InterfaceType,
                src: &Self::Lower,
            ) -> wasmtime::Result<Self> {
                let list = WasmList::<$elem>::linear_lift_from_flat(cx, ty, src)?;
                let (ptr, len) = (src[0].get_u32(), src[1].get_u32());
                debug_assert_eq!(list.len(), len as usize);
                Ok($copy(range(cx, ptr, len, $size)))
            }

            fn linear_lift_from_memory(
                cx: &mut LiftContext<'_>,
                ty: InterfaceType,
                bytes: &[u8],
            ) -> wasmtime::Result<Self> {
                let list = WasmList::<$elem>::linear_lift_from_memory(cx, ty, bytes)?;
                let (ptr, len) = pointer_pair(bytes);
                debug_assert_eq!(list.len(), len as usize);
                Ok($copy(range(cx, ptr, len, $size)))
            }
        }
    };
}

fast_list!(Bytes, u8, 1, Bytes::lift);
fast_list!(U32s, u32, 4, U32s::lift);

/// The WIT `bytes-column`, lifted fast.
#[derive(wasmtime::component::ComponentType, wasmtime::component::Lift, Debug)]
#[component(record)]
pub(crate) struct Column {
    /// Every value, back to back.
    pub data: Bytes,
    /// The end offset of each value.
    pub ends: U32s,
}

/// The WIT `output`, lifted fast where it is big (values, origins); keys and rejections use
/// the generated types.
#[derive(wasmtime::component::ComponentType, wasmtime::component::Lift, Debug)]
#[component(record)]
pub(crate) struct Output {
    /// The output values.
    pub values: Column,
    /// The origin of each output record, or empty for a map.
    pub origins: U32s,
    /// New keys, or `none`.
    pub keys: Option<types::KeysResult>,
    /// Rejected input records.
    pub rejected: Vec<types::BadRecord>,
}

/// `transform`'s signature with the fast output.
pub(crate) type TransformFn<'a> =
    TypedFunc<(types::BatchContext<'a>, types::Batch<'a>), (Result<Output, types::Error>,)>;

/// The interface a transformer exports.
const EXPORT: &str = "sluice:plugin/transform@0.1.0";

/// Finds `transform` on a freshly made transformer instance and checks its type against
/// [`TransformFn`] once; the stage then calls it with [`call_transform`].
pub(crate) fn lookup_transform(
    raw: &wasmtime::component::Instance,
    store: &mut wasmtime::Store<super::state::HostState>,
) -> wasmtime::Result<Func> {
    let iface = raw
        .get_export_index(&mut *store, None, EXPORT)
        .ok_or_else(|| wasmtime::format_err!("the instance exports no {EXPORT}"))?;
    let func = raw
        .get_export_index(&mut *store, Some(&iface), "transform")
        .ok_or_else(|| wasmtime::format_err!("its {EXPORT} has no function `transform`"))?;
    let typed: TransformFn<'_> = raw.get_typed_func(&mut *store, func)?;
    Ok(*typed.func())
}

/// Calls `transform` (found and type-checked by [`lookup_transform`]).
pub(crate) fn call_transform(
    func: Func,
    store: &mut wasmtime::Store<super::state::HostState>,
    ctx: types::BatchContext<'_>,
    input: types::Batch<'_>,
) -> wasmtime::Result<Result<Output, types::Error>> {
    // SAFETY: `func` was type-checked against `TransformFn` in `lookup_transform`; the
    // lifetimes are only those of the borrowed arguments.
    let typed: TransformFn<'_> = unsafe { TypedFunc::new_unchecked(func) };
    typed.call(store, (ctx, input)).map(|(r,)| r)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn u32s_are_read_little_endian_whatever_their_bytes() {
        let values = [0u32, 1, 0x0102_0304, u32::MAX, 1 << 31, 255];
        let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        assert_eq!(u32s_from(&bytes), values);
        // An unaligned source (a list in guest memory need not sit at a host-aligned address).
        let mut shifted = vec![0xAA];
        shifted.extend_from_slice(&bytes);
        assert_eq!(u32s_from(&shifted[1..]), values);
        assert!(u32s_from(&[]).is_empty());
    }
}
