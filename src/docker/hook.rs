//! Commands from labels, run inside running containers through the engine's exec API (for
//! example a database dump into the volume before it is read). Their output is captured; a
//! command that fails (non-zero exit) fails its phase with that output in the error.

use std::time::Instant;

use serde::Serialize;

use super::label::{ContainerInfo, Phase};
use super::{ContainerEngine, DockerError};

/// Longest output kept in a report or an error.
const MAX_REPORTED_OUTPUT_CHARS: usize = 4000;

/// One command that ran.
#[derive(Clone, Debug, Serialize)]
pub struct HookRun {
    /// `pre` or `post`.
    pub phase: Phase,
    /// Container name.
    pub container: String,
    /// The shell command.
    pub command: String,
    /// Its exit code, when the engine knows it.
    pub exit_code: Option<i64>,
    /// What it printed (capped).
    pub output: String,
    /// Seconds it took.
    pub duration_secs: f64,
}

/// Run the `phase` commands of each running container, in order; stop at the first failure.
/// The runs so far are appended to `runs` either way.
pub fn run_phase(
    client: &dyn ContainerEngine,
    containers: &[&ContainerInfo],
    phase: Phase,
    runs: &mut Vec<HookRun>,
) -> Result<(), DockerError> {
    for c in containers.iter().filter(|c| c.running) {
        for command in c.commands(phase) {
            let start = Instant::now();
            tracing::info!("{phase} command in {}: {command}", c.name);
            let result = client.exec(&c.id, &command);
            let (exit_code, output) = match result {
                Ok(r) => r,
                Err(e) => {
                    runs.push(HookRun {
                        phase,
                        container: c.name.clone(),
                        command: command.clone(),
                        exit_code: None,
                        output: e.to_string(),
                        duration_secs: start.elapsed().as_secs_f64(),
                    });
                    return Err(DockerError::Hook {
                        phase: phase.to_string(),
                        container: c.name.clone(),
                        command,
                        status: "could not run".into(),
                        output: e.to_string(),
                    });
                }
            };
            let output = cap(&output);
            runs.push(HookRun {
                phase,
                container: c.name.clone(),
                command: command.clone(),
                exit_code,
                output: output.clone(),
                duration_secs: start.elapsed().as_secs_f64(),
            });
            if exit_code != Some(0) {
                return Err(DockerError::Hook {
                    phase: phase.to_string(),
                    container: c.name.clone(),
                    command,
                    status: match exit_code {
                        Some(code) => format!("exit code {code}"),
                        None => "no exit code".into(),
                    },
                    output: if output.trim().is_empty() {
                        "(no output)".into()
                    } else {
                        output.trim().to_string()
                    },
                });
            }
        }
    }
    Ok(())
}

/// Keep the end of long output (where the error usually is).
fn cap(s: &str) -> String {
    let n = s.chars().count();
    if n <= MAX_REPORTED_OUTPUT_CHARS {
        return s.to_string();
    }
    let tail: String = s.chars().skip(n - MAX_REPORTED_OUTPUT_CHARS).collect();
    format!("[...]{tail}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cap_keeps_the_end() {
        assert_eq!(cap("short"), "short");
        let long = format!("{}END", "x".repeat(MAX_REPORTED_OUTPUT_CHARS * 2));
        let c = cap(&long);
        assert!(c.starts_with("[...]") && c.ends_with("END"));
        assert_eq!(c.chars().count(), MAX_REPORTED_OUTPUT_CHARS + 5);
    }
}
