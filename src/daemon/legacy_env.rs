//! The old offen/docker-volume-backup environment variables that mean something to coffer
//! (`BACKUP_CRON_EXPRESSION`, `BACKUP_RETENTION_DAYS`, `BACKUP_SOURCES`,
//! `BACKUP_EXCLUDE_REGEXP`, `BACKUP_STOP_DURING_BACKUP_LABEL`), read and checked so that an
//! existing compose file moves over with small edits. Pure: the environment comes in as a
//! lookup function; [`super::config`] applies the result over the file.

use std::path::PathBuf;

use super::config::ConfigError;
use super::schedule::Schedule;

/// What the old variables say, each already checked.
#[derive(Debug, Default)]
pub struct LegacyEnv {
    /// `BACKUP_CRON_EXPRESSION`.
    pub schedule: Option<String>,
    /// `BACKUP_RETENTION_DAYS`.
    pub retention_days: Option<u32>,
    /// `BACKUP_SOURCES`: its subdirectories are the sources.
    pub sources_dir: Option<PathBuf>,
    /// `BACKUP_EXCLUDE_REGEXP`, as globs.
    pub excludes: Vec<String>,
    /// `BACKUP_STOP_DURING_BACKUP_LABEL`.
    pub stop_label_value: Option<String>,
    /// One line per variable applied, for the start-up log.
    pub notes: Vec<String>,
}

fn invalid(key: &str, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key: key.to_string(),
        reason: reason.into(),
    }
}

/// Read the old variables through `env`; a bad value is an error naming the variable.
pub fn read(env: &dyn Fn(&str) -> Option<String>) -> Result<LegacyEnv, ConfigError> {
    let mut out = LegacyEnv::default();
    let mut note = |var: &str, what: &str| out.notes.push(format!("{var} sets {what}"));
    let mut schedule = None;
    if let Some(v) = env("BACKUP_CRON_EXPRESSION") {
        Schedule::parse(&v).map_err(|e| invalid("BACKUP_CRON_EXPRESSION", e))?;
        schedule = Some(v);
        note("BACKUP_CRON_EXPRESSION", "schedule");
    }
    let mut retention_days = None;
    if let Some(v) = env("BACKUP_RETENTION_DAYS") {
        let n: u32 = v.trim().parse().map_err(|_| {
            invalid(
                "BACKUP_RETENTION_DAYS",
                format!("{v:?} is not a whole number of days"),
            )
        })?;
        retention_days = Some(n);
        note("BACKUP_RETENTION_DAYS", "retention.retention_days");
    }
    let mut sources_dir = None;
    if let Some(v) = env("BACKUP_SOURCES") {
        sources_dir = Some(PathBuf::from(v));
        note("BACKUP_SOURCES", "backup.sources_dir");
    }
    let mut excludes = Vec::new();
    if let Some(v) = env("BACKUP_EXCLUDE_REGEXP").filter(|v| !v.is_empty()) {
        excludes = regexp_to_globs(&v).map_err(|r| invalid("BACKUP_EXCLUDE_REGEXP", r))?;
        note("BACKUP_EXCLUDE_REGEXP", "backup.exclude");
    }
    let mut stop_label_value = None;
    if let Some(v) = env("BACKUP_STOP_DURING_BACKUP_LABEL") {
        stop_label_value = Some(v);
        note(
            "BACKUP_STOP_DURING_BACKUP_LABEL",
            "backup.docker.stop_label_value",
        );
    }
    out.schedule = schedule;
    out.retention_days = retention_days;
    out.sources_dir = sources_dir;
    out.excludes = excludes;
    out.stop_label_value = stop_label_value;
    Ok(out)
}

/// Translate the old `BACKUP_EXCLUDE_REGEXP` into globs where that is exact: alternatives of
/// `\.ext$` or `\.(a|b)$` (the common "leave out these file types"). Anything else is refused,
/// with a pointer to `backup.exclude`, rather than silently matching something else.
pub fn regexp_to_globs(re: &str) -> Result<Vec<String>, String> {
    let refuse = || {
        format!(
            "{re:?} cannot be translated exactly into coffer's glob excludes (only \\.ext$ and \
             \\.(a|b)$ forms are); list globs in backup.exclude instead, e.g. [\"*.log\", \"cache/\"]"
        )
    };
    let word = |w: &str| {
        !w.is_empty()
            && w.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    };
    let mut globs = Vec::new();
    for alt in split_top_level(re).ok_or_else(refuse)? {
        let body = alt
            .strip_prefix("\\.")
            .and_then(|a| a.strip_suffix('$'))
            .ok_or_else(refuse)?;
        if let Some(inner) = body.strip_prefix('(').and_then(|b| b.strip_suffix(')')) {
            for w in inner.split('|') {
                if !word(w) {
                    return Err(refuse());
                }
                globs.push(format!("*.{w}"));
            }
        } else if word(body) {
            globs.push(format!("*.{body}"));
        } else {
            return Err(refuse());
        }
    }
    Ok(globs)
}

/// Split on `|` outside parentheses; `None` when they do not balance.
fn split_top_level(s: &str) -> Option<Vec<&str>> {
    let (mut depth, mut start, mut out) = (0i32, 0usize, Vec::new());
    for (i, c) in s.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            '|' if depth == 0 => {
                out.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
        if depth < 0 {
            return None;
        }
    }
    (depth == 0).then(|| {
        out.push(&s[start..]);
        out
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn old_environment_variables_apply() {
        let env = |k: &str| match k {
            "BACKUP_CRON_EXPRESSION" => Some("0 3 * * *".to_string()),
            "BACKUP_RETENTION_DAYS" => Some("14".to_string()),
            "BACKUP_SOURCES" => Some("/backup".to_string()),
            "BACKUP_EXCLUDE_REGEXP" => Some("\\.(log|tmp)$".to_string()),
            "BACKUP_STOP_DURING_BACKUP_LABEL" => Some("nightly".to_string()),
            _ => None,
        };
        let l = super::super::config::parse("[backup.docker]\nall_volumes = true\n", &env).unwrap();
        let c = l.config;
        assert_eq!(c.schedule_text, "0 3 * * *");
        assert_eq!(c.retention.policy.retention_days, Some(14));
        assert_eq!(c.backup.sources_dir, Some(PathBuf::from("/backup")));
        assert_eq!(c.backup.excludes, vec!["*.log", "*.tmp"]);
        assert_eq!(c.backup.docker.unwrap().stop_label_value, "nightly");
        assert_eq!(l.notes.len(), 5);
    }

    #[test]
    fn exclude_regexp_translation() {
        let ok: &[(&str, &[&str])] = &[
            ("\\.log$", &["*.log"]),
            ("\\.(log|tmp)$", &["*.log", "*.tmp"]),
            ("\\.log$|\\.swp$", &["*.log", "*.swp"]),
        ];
        for (re, want) in ok {
            assert_eq!(regexp_to_globs(re).unwrap(), *want, "{re}");
        }
        for re in [
            "^/backup/cache",
            "\\.log",
            ".*\\.log$",
            "\\.(log$",
            "\\.(a.b)$",
        ] {
            let e = regexp_to_globs(re).expect_err(re);
            assert!(e.contains("backup.exclude"), "{re}: {e}");
        }
    }
}
