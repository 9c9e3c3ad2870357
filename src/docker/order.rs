//! The order containers stop and start in. Pure: a function of the containers' labels and
//! wiring.
//!
//! A container starts after every container it depends on, and stops before them (dependents
//! stop first and start last). Dependencies on containers outside the set are ignored. Ties
//! are broken by name, so the order is deterministic; a dependency cycle is broken the same
//! way and reported.

use std::collections::BTreeSet;

use super::label::ContainerInfo;

/// An order over a set of containers, as indices into it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Order {
    /// Indices in start order; stop order is the reverse.
    pub start: Vec<usize>,
    /// Names of containers whose dependencies formed a cycle (ordered by name instead).
    pub cycle: Vec<String>,
}

impl Order {
    /// Indices in stop order.
    pub fn stop(&self) -> Vec<usize> {
        self.start.iter().rev().copied().collect()
    }
}

/// Compute the start order of `containers`.
pub fn start_order(containers: &[ContainerInfo]) -> Order {
    let n = containers.len();
    // deps[i]: the containers i depends on.
    let mut deps: Vec<BTreeSet<usize>> = vec![BTreeSet::new(); n];
    for (i, c) in containers.iter().enumerate() {
        for r in c.dependencies() {
            for (j, other) in containers.iter().enumerate() {
                if i != j && other.matches(&r, c.project()) {
                    deps[i].insert(j);
                }
            }
        }
    }
    let key = |i: usize| (containers[i].name.clone(), i);
    let mut done = vec![false; n];
    let mut start = Vec::with_capacity(n);
    let mut cycle = Vec::new();
    while start.len() < n {
        let ready: Option<usize> = (0..n)
            .filter(|&i| !done[i] && deps[i].iter().all(|&d| done[d]))
            .min_by_key(|&i| key(i));
        let next = match ready {
            Some(i) => i,
            None => {
                // A cycle: take the first remaining by name and go on.
                let Some(i) = (0..n).filter(|&i| !done[i]).min_by_key(|&i| key(i)) else {
                    break;
                };
                cycle.push(containers[i].name.clone());
                i
            }
        };
        done[next] = true;
        start.push(next);
    }
    Order { start, cycle }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::docker::label::{COMPOSE_DEPENDS_ON, COMPOSE_PROJECT, COMPOSE_SERVICE};

    fn svc(name: &str, deps: &str) -> ContainerInfo {
        let mut labels = std::collections::HashMap::from([
            (COMPOSE_PROJECT.to_string(), "p".to_string()),
            (COMPOSE_SERVICE.to_string(), name.to_string()),
        ]);
        if !deps.is_empty() {
            labels.insert(COMPOSE_DEPENDS_ON.to_string(), deps.to_string());
        }
        ContainerInfo {
            id: format!("{name:0>16}"),
            name: format!("p-{name}-1"),
            labels,
            ..Default::default()
        }
    }

    fn names(cs: &[ContainerInfo], idx: &[usize]) -> Vec<String> {
        idx.iter().map(|&i| cs[i].name.clone()).collect()
    }

    #[test]
    fn dependencies_start_first_and_stop_last() {
        let cs = vec![
            svc("web", "app:service_started:false"),
            svc("app", "db:service_healthy:false"),
            svc("db", ""),
        ];
        let o = start_order(&cs);
        assert_eq!(names(&cs, &o.start), ["p-db-1", "p-app-1", "p-web-1"]);
        assert_eq!(names(&cs, &o.stop()), ["p-web-1", "p-app-1", "p-db-1"]);
        assert!(o.cycle.is_empty());
    }

    #[test]
    fn network_mode_and_links_are_dependencies() {
        let mut sidecar = svc("sidecar", "");
        sidecar.network_mode = Some(format!("container:{}", svc("main", "").id));
        let mut legacy = svc("legacy", "");
        legacy.links = vec!["/p-sidecar-1:/p-legacy-1/sidecar".into()];
        let cs = vec![legacy, sidecar, svc("main", "")];
        let o = start_order(&cs);
        assert_eq!(
            names(&cs, &o.start),
            ["p-main-1", "p-sidecar-1", "p-legacy-1"]
        );
    }

    #[test]
    fn outside_dependencies_are_ignored_and_ties_go_by_name() {
        let cs = vec![svc("b", "zzz:service_started:false"), svc("a", "")];
        assert_eq!(names(&cs, &start_order(&cs).start), ["p-a-1", "p-b-1"]);
    }

    #[test]
    fn cycles_are_broken_by_name() {
        let cs = vec![
            svc("x", "y:service_started:false"),
            svc("y", "x:service_started:false"),
            svc("z", "x:service_started:false"),
        ];
        let o = start_order(&cs);
        assert_eq!(o.start.len(), 3);
        assert_eq!(names(&cs, &o.start), ["p-x-1", "p-y-1", "p-z-1"]);
        assert_eq!(o.cycle, ["p-x-1"]);
    }

    #[test]
    fn empty_set() {
        assert!(start_order(&[]).start.is_empty());
    }
}
