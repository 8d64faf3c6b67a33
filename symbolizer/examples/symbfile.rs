//! Writes the symbfile of each ELF file given and prints what it holds and how long it took:
//! `cargo run --release -p symbolizer --example symbfile -- FILE... [--out DIR]`.

use std::time::Instant;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let out = args.iter().position(|a| a == "--out").map(|i| {
        let dir = args.remove(i + 1);
        args.remove(i);
        dir
    });
    for path in args {
        let data = std::fs::read(&path)?;
        let started = Instant::now();
        let (bytes, summary) = symbolizer::symbfile::write(&data, Vec::new())?;
        let elapsed = started.elapsed();
        println!(
            "{path}: {:.1} MB in, {} ranges ({} from DWARF, {} units skipped), {:.1} MB out, {:.0} ms",
            data.len() as f64 / 1e6,
            summary.ranges,
            summary.dwarf_ranges,
            summary.dwarf_units_skipped,
            bytes.len() as f64 / 1e6,
            elapsed.as_secs_f64() * 1e3
        );
        if let Some(dir) = &out {
            let name = std::path::Path::new(&path).file_name().ok_or("no file name")?;
            std::fs::write(std::path::Path::new(dir).join(name).with_extension("symbfile"), bytes)?;
        }
    }
    Ok(())
}
