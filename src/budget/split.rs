//! The split of one API's app budget over the live members: max-min fair by demand.
//!
//! Every member computes the split from the same table (the coordination topic's leases), sorted
//! the same way, so they all arrive at the same numbers without talking to each other again.

/// Max-min fair shares of `capacity` (calls/s) for members wanting `demands` (calls/s each, same
/// order): the members that want less than an equal share get what they want; the rest of the
/// capacity is divided equally among the others, recursively ("water-filling"). What nobody wants
/// (total demand below the capacity) is handed out equally on top, so a member whose demand grows
/// has room before the next split, and the shares always add up to exactly `capacity` — never more.
///
/// A negative or NaN demand counts as zero. With no members the result is empty.
pub fn max_min_fair(capacity: f64, demands: &[f64]) -> Vec<f64> {
    let n = demands.len();
    let mut shares = vec![0.0; n];
    if n == 0 || capacity <= 0.0 || !capacity.is_finite() {
        return shares;
    }
    let wanted = |d: f64| if d.is_nan() || d < 0.0 { 0.0 } else { d };
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by(|&a, &b| wanted(demands[a]).total_cmp(&wanted(demands[b])));
    let mut remaining = capacity;
    for (served, &i) in order.iter().enumerate() {
        let level = remaining / (n - served) as f64;
        let give = wanted(demands[i]).min(level);
        shares[i] = give;
        remaining -= give;
    }
    // Rounding can leave a hair below zero; what is left is nobody's demand.
    let spare = remaining.max(0.0) / n as f64;
    for s in &mut shares {
        *s += spare;
    }
    shares
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: &[f64], b: &[f64]) -> bool {
        a.len() == b.len() && a.iter().zip(b).all(|(x, y)| (x - y).abs() < 1e-9)
    }

    #[test]
    fn one_hot_member_gets_what_the_others_leave() {
        // The skew of the budget-skew bench: one replica with a backlog, two nearly idle.
        let s = max_min_fair(200.0, &[500.0, 5.0, 10.0]);
        assert!(close(&s, &[185.0, 5.0, 10.0]), "{s:?}");
    }

    #[test]
    fn everybody_saturated_splits_equally() {
        let s = max_min_fair(200.0, &[300.0, 1000.0, 250.0]);
        assert!(close(&s, &[200.0 / 3.0; 3]), "{s:?}");
    }

    #[test]
    fn water_filling_serves_small_demands_first() {
        // 100 over 4: 10 is served, 90 over 3 = 30 each, 20 is served, 70 over 2 = 35 each.
        let s = max_min_fair(100.0, &[10.0, 20.0, 50.0, 60.0]);
        assert!(close(&s, &[10.0, 20.0, 35.0, 35.0]), "{s:?}");
    }

    #[test]
    fn spare_capacity_is_shared_equally_and_the_sum_is_the_capacity() {
        let s = max_min_fair(100.0, &[10.0, 20.0]);
        assert!(close(&s, &[45.0, 55.0]), "{s:?}");
        for demands in [
            vec![0.0, 0.0, 0.0],
            vec![1e9, 3.0],
            vec![f64::NAN, -4.0, 7.0],
        ] {
            let s = max_min_fair(100.0, &demands);
            assert!(
                (s.iter().sum::<f64>() - 100.0).abs() < 1e-9,
                "{demands:?} → {s:?}"
            );
            assert!(s.iter().all(|&x| x >= 0.0), "{s:?}");
        }
    }

    #[test]
    fn the_split_does_not_depend_on_the_order_of_the_members() {
        let a = max_min_fair(200.0, &[500.0, 5.0, 10.0, 70.0]);
        let b = max_min_fair(200.0, &[70.0, 10.0, 5.0, 500.0]);
        assert!(close(&a, &[b[3], b[2], b[1], b[0]]), "{a:?} vs {b:?}");
    }

    #[test]
    fn no_members_or_no_capacity() {
        assert!(max_min_fair(100.0, &[]).is_empty());
        assert!(close(&max_min_fair(0.0, &[5.0, 5.0]), &[0.0, 0.0]));
    }
}
