//! Issue 18 (memory): the Prometheus recorder keeps every histogram sample until
//! something drains it. Nothing may depend on a scraper for that: a node nobody
//! scrapes records two samples per delivery, and at 3,000 deliveries a second it
//! grew by megabytes a minute, for as long as it ran.
#![cfg(feature = "ssr")]

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicIsize, Ordering};
use std::time::{Duration, Instant};

/// The system allocator, counting the bytes allocated and not yet freed.
struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

fn live_mb() -> f64 {
    LIVE.load(Ordering::Relaxed) as f64 / 1e6
}

#[test]
fn histogram_samples_do_not_pile_up_when_nobody_scrapes() {
    herald::metrics::handle();
    let before = live_mb();
    // What a million deliveries record, and no scrape.
    let attempts = metrics::histogram!(herald::metrics::ATTEMPT_SECONDS, "project" => "default");
    for i in 0..1_000_000u32 {
        attempts.record(f64::from(i % 1000) / 1000.0);
    }
    let recorded = live_mb();
    assert!(recorded - before > 4.0, "the samples should take memory before the upkeep: {before:.1} -> {recorded:.1} MB");

    let deadline = Instant::now() + herald::metrics::UPKEEP * 4;
    loop {
        let now = live_mb();
        if now - before < 1.0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "a million unscraped histogram samples still hold {:.1} MB after {:?}",
            now - before,
            herald::metrics::UPKEEP * 4
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // The samples were folded into the histogram, not thrown away.
    let text = herald::metrics::handle().render();
    let count = text
        .lines()
        .find(|l| l.starts_with(&format!("{}_count", herald::metrics::ATTEMPT_SECONDS)))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|n| n.parse::<u64>().ok());
    assert_eq!(count, Some(1_000_000), "{text}");
}
