//! `--include` / `--exclude` for restore: globs over paths inside the snapshot.
//!
//! A pattern without `/` matches an entry's name at any depth (`*.log`); a pattern with `/`
//! matches the path from the snapshot's root (`src/data/**`, a leading `/` optional), where
//! `*` stays inside one component and `**` crosses them.

use globset::{Glob, GlobBuilder, GlobSet, GlobSetBuilder};

/// A pattern that cannot be compiled (a user error, naming the option and the pattern).
#[derive(Debug, thiserror::Error)]
pub enum PatternError {
    /// The pattern is empty once its slashes are trimmed.
    #[error("--{option} {pattern:?}: the pattern is empty")]
    Empty {
        /// `include` or `exclude`.
        option: &'static str,
        /// The pattern as given.
        pattern: String,
    },
    /// The glob syntax is wrong.
    #[error("--{option} {pattern:?}: {source}")]
    Glob {
        /// `include` or `exclude`.
        option: &'static str,
        /// The pattern as given (empty: the set as a whole).
        pattern: String,
        /// What the glob parser said.
        source: globset::Error,
    },
}

/// A compiled set of patterns.
#[derive(Default)]
struct Patterns {
    names: Option<GlobSet>,
    paths: Option<GlobSet>,
}

impl Patterns {
    fn new(patterns: &[String], what: &'static str) -> Result<Self, PatternError> {
        let (mut names, mut paths) = (GlobSetBuilder::new(), GlobSetBuilder::new());
        let (mut n_names, mut n_paths) = (0, 0);
        for p in patterns {
            let bad = |source| PatternError::Glob {
                option: what,
                pattern: p.clone(),
                source,
            };
            let trimmed = p.trim_start_matches('/').trim_end_matches('/');
            if trimmed.is_empty() {
                return Err(PatternError::Empty {
                    option: what,
                    pattern: p.clone(),
                });
            }
            if p.starts_with('/') || trimmed.contains('/') {
                let g = GlobBuilder::new(trimmed)
                    .literal_separator(true)
                    .build()
                    .map_err(bad)?;
                paths.add(g);
                n_paths += 1;
            } else {
                names.add(Glob::new(trimmed).map_err(bad)?);
                n_names += 1;
            }
        }
        let build = |b: GlobSetBuilder, n: usize| -> Result<Option<GlobSet>, PatternError> {
            if n == 0 {
                return Ok(None);
            }
            b.build().map(Some).map_err(|source| PatternError::Glob {
                option: what,
                pattern: String::new(),
                source,
            })
        };
        Ok(Self {
            names: build(names, n_names)?,
            paths: build(paths, n_paths)?,
        })
    }

    fn is_empty(&self) -> bool {
        self.names.is_none() && self.paths.is_none()
    }

    /// Whether `rel` (a path from the snapshot's root, `/`-separated, no leading `/`) matches.
    fn matches(&self, rel: &str) -> bool {
        let name = rel.rsplit('/').next().unwrap_or(rel);
        self.names.as_ref().is_some_and(|s| s.is_match(name))
            || self.paths.as_ref().is_some_and(|s| s.is_match(rel))
    }
}

/// Which entries of a snapshot a restore takes.
#[derive(Default)]
pub struct PathFilter {
    includes: Patterns,
    excludes: Patterns,
}

impl PathFilter {
    /// Compile the patterns; a malformed one is a usage error naming it.
    pub fn new(includes: &[String], excludes: &[String]) -> Result<Self, PatternError> {
        Ok(Self {
            includes: Patterns::new(includes, "include")?,
            excludes: Patterns::new(excludes, "exclude")?,
        })
    }

    /// Whether only included entries are taken.
    pub fn has_includes(&self) -> bool {
        !self.includes.is_empty()
    }

    /// Whether `rel` is excluded (with everything below it).
    pub fn excluded(&self, rel: &str) -> bool {
        self.excludes.matches(rel)
    }

    /// Whether `rel` matches an include pattern (everything below it is then taken too).
    pub fn included(&self, rel: &str) -> bool {
        self.includes.is_empty() || self.includes.matches(rel)
    }
}

#[cfg(test)]
mod tests {
    use super::PathFilter;

    fn f(inc: &[&str], exc: &[&str]) -> PathFilter {
        let s = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        PathFilter::new(&s(inc), &s(exc)).unwrap()
    }

    #[test]
    fn names_match_at_any_depth_and_paths_from_the_root() {
        let x = f(&[], &["*.log", "/src/data/**", "cache/"]);
        assert!(x.excluded("a.log"));
        assert!(x.excluded("deep/down/b.log"));
        assert!(!x.excluded("a.log.txt"));
        assert!(x.excluded("src/data/x/y"));
        assert!(!x.excluded("other/src/data/x"));
        assert!(
            x.excluded("cache"),
            "a trailing / is ignored: a name pattern"
        );
        assert!(x.excluded("a/b/cache"));
        assert!(!x.excluded("src"));
    }

    #[test]
    fn a_single_star_stays_in_one_component() {
        let x = f(&["src/*.rs"], &[]);
        assert!(x.has_includes());
        assert!(x.included("src/main.rs"));
        assert!(!x.included("src/sub/main.rs"));
        assert!(!x.included("main.rs"));
    }

    #[test]
    fn without_includes_everything_is_included() {
        let x = f(&[], &[]);
        assert!(!x.has_includes());
        assert!(x.included("anything/at/all"));
        assert!(!x.excluded("anything"));
    }

    #[test]
    fn malformed_and_empty_patterns_are_refused() {
        assert!(PathFilter::new(&["a[".into()], &[]).is_err());
        assert!(PathFilter::new(&[], &["/".into()]).is_err());
    }
}
