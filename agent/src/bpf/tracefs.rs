//! Tracepoints as tracefs describes them: whether one exists, and whether its record has the
//! fields the BPF programs read where they read them (`agent_common::tracepoints`).

use std::path::{Path, PathBuf};

use agent_common::tracepoints::{inet_sock_set_state, SYSCALL_ARG0, SYSCALL_ARGS_READ, SYSCALL_ARG_BYTES, SYSCALL_RET};
use anyhow::{bail, Context, Result};

fn tracefs() -> &'static str {
    if Path::new("/sys/kernel/tracing/events").exists() {
        "/sys/kernel/tracing"
    } else {
        "/sys/kernel/debug/tracing"
    }
}

fn event_dir(category: &str, name: &str) -> PathBuf {
    Path::new(tracefs()).join("events").join(category).join(name)
}

/// Whether tracefs lists the tracepoint `category:name`.
pub fn tracepoint_exists(category: &str, name: &str) -> bool {
    event_dir(category, name).exists()
}

fn read_format(category: &str, name: &str) -> Result<String> {
    let path = event_dir(category, name).join("format");
    std::fs::read_to_string(&path).with_context(|| format!("cannot read {}", path.display()))
}

/// The BPF program reads `inet_sock_set_state` at fixed offsets; check the kernel agrees.
pub fn check_state_format() -> Result<()> {
    check_fields(inet_sock_set_state::CATEGORY, inet_sock_set_state::NAME, &inet_sock_set_state::FIELDS)
}

/// Whether the tracepoint `category:name` has each `(field, offset)`.
fn check_fields(category: &str, name: &str, fields: &[(&str, usize)]) -> Result<()> {
    let format = read_format(category, name)?;
    for &(field, expected) in fields {
        let offset = field_offset(&format, field).map(|(offset, _)| offset);
        if offset != Some(expected) {
            bail!("{category}:{name} has field {field} at offset {offset:?}, oxeye expects {expected}");
        }
    }
    Ok(())
}

/// The BPF programs read syscall arguments (and `ret`) at fixed offsets; check that the
/// tracepoint `syscalls:name` agrees.
pub fn check_syscall_format(name: &str) -> Result<()> {
    let format = read_format("syscalls", name)?;
    check_syscall_fields(name, &format)
}

fn check_syscall_fields(name: &str, format: &str) -> Result<()> {
    let expected: Vec<(usize, usize)> = if name.starts_with("sys_exit_") {
        vec![(SYSCALL_ARG0, SYSCALL_ARG_BYTES)]
    } else {
        (0..SYSCALL_ARGS_READ).map(|i| (SYSCALL_ARG0 + i * SYSCALL_ARG_BYTES, SYSCALL_ARG_BYTES)).collect()
    };
    // The record's own fields, in order, after the common header and the syscall number.
    let fields: Vec<(&str, usize, usize)> = fields(format).filter(|(field, _, _)| !field.starts_with("common_") && *field != "__syscall_nr").collect();
    if name.starts_with("sys_exit_") && fields.first().map(|(field, _, _)| *field) != Some(SYSCALL_RET) {
        bail!("syscalls:{name} has no field {SYSCALL_RET} first: {fields:?}");
    }
    for (i, &(offset, size)) in expected.iter().enumerate() {
        // Syscalls with fewer arguments are read no further than they have.
        let Some(&(field, at, bytes)) = fields.get(i) else { break };
        if (at, bytes) != (offset, size) {
            bail!("syscalls:{name} has field {field} at offset {at} (size {bytes}), oxeye expects offset {offset} (size {size})");
        }
    }
    Ok(())
}

/// Every `(name, offset, size)` of a tracepoint format file.
fn fields(format: &str) -> impl Iterator<Item = (&str, usize, usize)> {
    format.lines().filter_map(|line| {
        let declaration = line.trim().strip_prefix("field:")?.split(';').next()?;
        let name = declaration.rsplit([' ', '*']).next()?.split('[').next()?;
        let number = |key: &str| line.split(';').find_map(|part| part.trim().strip_prefix(key)?.parse().ok());
        Some((name, number("offset:")?, number("size:")?))
    })
}

/// The (offset, size) of `field` in a tracepoint format file.
fn field_offset(format: &str, field: &str) -> Option<(usize, usize)> {
    fields(format).find(|(name, _, _)| *name == field).map(|(_, offset, size)| (offset, size))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn format_offsets() {
        let format = "\tfield:const void * skaddr;\toffset:8;\tsize:8;\tsigned:0;\n\tfield:int newstate;\toffset:20;\tsize:4;\tsigned:1;\n\tfield:__u8 saddr[4];\toffset:32;\tsize:4;\tsigned:0;\n";
        assert_eq!(field_offset(format, "skaddr"), Some((8, 8)));
        assert_eq!(field_offset(format, "newstate"), Some((20, 4)));
        assert_eq!(field_offset(format, "saddr"), Some((32, 4)));
        assert_eq!(field_offset(format, "protocol"), None);
    }

    const HEADER: &str = "\tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;\n\tfield:int common_pid;\toffset:4;\tsize:4;\tsigned:1;\n\n\tfield:int __syscall_nr;\toffset:8;\tsize:4;\tsigned:1;\n";

    #[test]
    fn syscall_formats() {
        let enter = format!("{HEADER}\tfield:unsigned int fd;\toffset:16;\tsize:8;\tsigned:0;\n\tfield:char * buf;\toffset:24;\tsize:8;\tsigned:0;\n\tfield:size_t count;\toffset:32;\tsize:8;\tsigned:0;\n");
        check_syscall_fields("sys_enter_read", &enter).expect("this kernel's layout");
        let close = format!("{HEADER}\tfield:unsigned int fd;\toffset:16;\tsize:8;\tsigned:0;\n");
        check_syscall_fields("sys_enter_close", &close).expect("one argument");
        let exit = format!("{HEADER}\tfield:long ret;\toffset:16;\tsize:8;\tsigned:1;\n");
        check_syscall_fields("sys_exit_read", &exit).expect("ret at 16");

        let moved = enter.replace("offset:24", "offset:28");
        let error = check_syscall_fields("sys_enter_read", &moved).expect_err("buf moved").to_string();
        assert_eq!(error, "syscalls:sys_enter_read has field buf at offset 28 (size 8), oxeye expects offset 24 (size 8)");
        let exit32 = exit.replace("offset:16", "offset:12");
        assert!(check_syscall_fields("sys_exit_read", &exit32).is_err());
    }
}
