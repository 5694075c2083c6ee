//! The `log` facade, printed to the console as `[    1.234567] LEVEL target: message`.

use log::{Level, LevelFilter, Log, Metadata, Record};

use crate::time;

struct ConsoleLogger;

static LOGGER: ConsoleLogger = ConsoleLogger;

impl Log for ConsoleLogger {
    fn enabled(&self, metadata: &Metadata) -> bool {
        metadata.level() <= log::max_level()
    }

    fn log(&self, record: &Record) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let us = time::now_us();
        let level = match record.level() {
            Level::Error => "ERROR",
            Level::Warn => "WARN ",
            Level::Info => "INFO ",
            Level::Debug => "DEBUG",
            Level::Trace => "TRACE",
        };
        crate::println!(
            "[{:5}.{:06}] {level} {}",
            us / 1_000_000,
            us % 1_000_000,
            record.args()
        );
    }

    fn flush(&self) {}
}

/// Installs the logger at `level`.
pub fn init(level: LevelFilter) {
    // A second call would be a boot-order bug; the first logger stays.
    let _ = log::set_logger(&LOGGER);
    log::set_max_level(level);
}
