//! Progress output on stderr, shared by the demo and `dlq replay`.

/// `[####....]`, 40 columns filled in proportion to `done / total`.
pub(crate) fn bar(done: u64, total: u64) -> String {
    const WIDTH: usize = 40;
    let filled = ((done as f64 / total.max(1) as f64) * WIDTH as f64) as usize;
    let filled = filled.min(WIDTH);
    format!("[{}{}]", "#".repeat(filled), ".".repeat(WIDTH - filled))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bar_fills_in_proportion() {
        assert_eq!(bar(0, 10), format!("[{}]", ".".repeat(40)));
        assert_eq!(
            bar(5, 10),
            format!("[{}{}]", "#".repeat(20), ".".repeat(20))
        );
        assert_eq!(bar(12, 10), format!("[{}]", "#".repeat(40)), "capped");
        assert_eq!(bar(0, 0), format!("[{}]", ".".repeat(40)), "no total");
    }
}
