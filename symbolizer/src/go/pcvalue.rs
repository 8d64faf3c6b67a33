//! Pc-value tables: Go's run-length encoding of a value (file index, line, inline-tree
//! index, ...) over a function's pcs, as pairs of (zig-zag value delta, pc delta / minLC)
//! varints, the value starting at -1 and the pc at the function's entry.

use super::reader::uvarint;

/// The value the table at `table` (an offset into `pctab`) gives for `target`, in a
/// function starting at `entry`. `None` if `target` is before `entry`, past the table's
/// end, or the table is malformed. Each step consumes at least two bytes, so the walk ends
/// within `pctab.len() / 2` steps whatever the bytes are.
pub(super) fn pc_value(pctab: &[u8], table: u32, entry: u64, target: u64, min_lc: u8) -> Option<i32> {
    if target < entry {
        return None;
    }
    // Offsets from the entry fit in 32 bits for any real function; a longer walk is
    // malformed and ends when the offset would overflow.
    let target = u32::try_from(target - entry).ok()?;
    let mut bytes = pctab.get(usize::try_from(table).ok()?..)?;
    let mut value: i32 = -1;
    let mut pc: u32 = 0;
    let mut first = true;
    loop {
        let uv = next_uvarint(&mut bytes)?;
        if uv == 0 && !first {
            return None;
        }
        first = false;
        let delta = if uv & 1 != 0 { !((uv >> 1) as i32) } else { (uv >> 1) as i32 };
        value = value.wrapping_add(delta);
        pc = pc.checked_add(next_uvarint(&mut bytes)?.checked_mul(u32::from(min_lc))?)?;
        if target < pc {
            return Some(value);
        }
    }
}

/// Calls `each(start, end, value)` for every run of the table at `table`, in pc order,
/// with pcs relative to the function's entry. Stops at the table's end or at the first
/// malformed step; returns false if it stopped at a malformed one.
pub(super) fn pc_value_runs(pctab: &[u8], table: u32, min_lc: u8, mut each: impl FnMut(u32, u32, i32)) -> bool {
    let Some(mut bytes) = usize::try_from(table).ok().and_then(|start| pctab.get(start..)) else { return false };
    let mut value: i32 = -1;
    let mut pc: u32 = 0;
    let mut first = true;
    loop {
        let Some(uv) = next_uvarint(&mut bytes) else { return false };
        if uv == 0 && !first {
            return true;
        }
        first = false;
        let delta = if uv & 1 != 0 { !((uv >> 1) as i32) } else { (uv >> 1) as i32 };
        value = value.wrapping_add(delta);
        let Some(end) = next_uvarint(&mut bytes).and_then(|d| d.checked_mul(u32::from(min_lc))).and_then(|d| pc.checked_add(d)) else { return false };
        each(pc, end, value);
        pc = end;
    }
}

/// Reads a varint off the front of `bytes` (the hot loop's version of
/// [`super::reader::uvarint`]: a slice advanced in place, one-byte values first).
#[inline(always)]
fn next_uvarint(bytes: &mut &[u8]) -> Option<u32> {
    let (&first, rest) = bytes.split_first()?;
    if first & 0x80 == 0 {
        *bytes = rest;
        return Some(u32::from(first));
    }
    let mut pos = 0;
    let value = uvarint(bytes, &mut pos)?;
    *bytes = bytes.get(pos..)?;
    Some(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_runs() {
        // value -1+2=1 for pcs [0x10, 0x14), then 1+3=4 for [0x14, 0x20), then end.
        let table = [0x04, 0x04, 0x06, 0x0c, 0x00];
        assert_eq!(pc_value(&table, 0, 0x10, 0x10, 1), Some(1));
        assert_eq!(pc_value(&table, 0, 0x10, 0x13, 1), Some(1));
        assert_eq!(pc_value(&table, 0, 0x10, 0x14, 1), Some(4));
        assert_eq!(pc_value(&table, 0, 0x10, 0x20, 1), None);
        assert_eq!(pc_value(&table, 0, 0x10, 0x0f, 1), None);
        // A negative delta: zig-zag 3 is -2.
        assert_eq!(pc_value(&[0x03, 0x01], 0, 0, 0, 1), Some(-3));
    }

    #[test]
    fn lists_runs() {
        let mut runs = Vec::new();
        assert!(pc_value_runs(&[0x04, 0x04, 0x06, 0x0c, 0x00], 0, 1, |start, end, value| runs.push((start, end, value))));
        assert_eq!(runs, [(0, 4, 1), (4, 16, 4)]);
        assert!(!pc_value_runs(&[0x04, 0x04, 0x06], 0, 1, |_, _, _| {}));
        assert!(!pc_value_runs(&[0x04], 9, 1, |_, _, _| {}));
    }

    #[test]
    fn truncated_tables_end() {
        let table = [0x04, 0x04, 0x06];
        assert_eq!(pc_value(&table, 0, 0, 100, 1), None);
        assert_eq!(pc_value(&table, 7, 0, 0, 1), None);
        assert_eq!(pc_value(&[0x02, 0x00, 0x02, 0x00], 0, 0, 0, 4), None);
    }
}
