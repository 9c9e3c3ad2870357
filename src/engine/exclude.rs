//! What a backup leaves out, as restic users type it: exclude patterns (`--exclude`,
//! `--iexclude`), tag files that mark a directory's content as not worth keeping
//! (`--exclude-caches`, `--exclude-if-present`) and the file system boundary
//! (`--one-file-system`); and the lists that feed a backup (`--exclude-file`, `--files-from`).
//!
//! The decisions are pure: they see path components, names, file headers and device numbers,
//! never the file system. [`read_pattern_file`] and [`read_file_list`] (which expands globs)
//! are the only functions here that do I/O.
//!
//! Invariant: the walk asks about each entry below a source as it reaches it, and never
//! reaches what is below an excluded directory. So a pattern only has to match at the end of
//! a path: restic's matches of a pattern against the start of a longer path are the same
//! decisions, taken one level up.

use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Component, Path, PathBuf};

use globset::{GlobBuilder, GlobMatcher};

use super::EngineError;

/// The tag file `--exclude-caches` looks for (<https://bford.info/cachedir/>).
pub const CACHEDIR_TAG: &str = "CACHEDIR.TAG";
/// What a valid `CACHEDIR.TAG` starts with.
pub const CACHEDIR_SIGNATURE: &[u8] = b"Signature: 8a477f597d28d172789f06886806bc55";

/// One exclude pattern, compiled.
///
/// A pattern is split at `/` into components, each a glob of one name (`*`, `?`, `[a-z]`,
/// `{a,b}`; `*` never matches `/`), and `**` matches any number of components, none
/// included. A pattern that starts with `/` matches a whole path; any other matches the end
/// of one, so a pattern without `/` matches a name at any depth.
#[derive(Debug)]
pub struct Pattern {
    anchored: bool,
    parts: Vec<Part>,
}

#[derive(Debug)]
enum Part {
    /// `**`: any number of components.
    AnyDepth,
    /// A name without glob characters, compared byte for byte.
    Literal(Vec<u8>),
    /// A glob of one name.
    Glob(GlobMatcher),
}

impl Part {
    fn matches(&self, name: &[u8]) -> bool {
        match self {
            Part::AnyDepth => true,
            Part::Literal(l) => l == name,
            Part::Glob(g) => g.is_match(Path::new(OsStr::from_bytes(name))),
        }
    }
}

/// Characters that make a component a glob.
const GLOB_CHARS: &[char] = &['*', '?', '[', ']', '{', '}', '\\'];

impl Pattern {
    /// Compile `pattern` (matched without regard to case when `ignore_case`). `None` for a
    /// pattern that names nothing (empty, `/`, `.`), which restic ignores too.
    pub fn new(pattern: &str, ignore_case: bool) -> Result<Option<Self>, EngineError> {
        let anchored = pattern.starts_with('/');
        // Cleaned as restic does (Go's filepath.Clean): no empty or `.` components, `..`
        // removes the component before it.
        let mut comps: Vec<&str> = Vec::new();
        for c in pattern.split('/') {
            match c {
                "" | "." => {}
                ".." if comps.last().is_some_and(|l| *l != "..") => {
                    comps.pop();
                }
                ".." if anchored => {}
                c => {
                    // `**` twice in a row means what one does; dropping the repeat keeps
                    // matching polynomial.
                    if !(c == "**" && comps.last() == Some(&"**")) {
                        comps.push(c);
                    }
                }
            }
        }
        if comps.is_empty() {
            return Ok(None);
        }
        let mut parts = Vec::with_capacity(comps.len());
        for c in comps {
            let part = if c == "**" {
                Part::AnyDepth
            } else if !ignore_case && !c.contains(GLOB_CHARS) {
                Part::Literal(c.as_bytes().to_vec())
            } else {
                // Inside a name, `**` is `*` (as in restic); globset would refuse it.
                let mut c = c.to_string();
                while c.contains("**") {
                    c = c.replace("**", "*");
                }
                let glob = GlobBuilder::new(&c)
                    .literal_separator(true)
                    .backslash_escape(true)
                    .case_insensitive(ignore_case)
                    .build()
                    .map_err(|e| {
                        EngineError::Usage(format!("bad exclude pattern {pattern:?}: {e}"))
                    })?;
                Part::Glob(glob.compile_matcher())
            };
            parts.push(part);
        }
        Ok(Some(Pattern { anchored, parts }))
    }

    /// Whether the pattern matches `path`, given as its components from the root.
    pub fn matches(&self, path: &[&[u8]]) -> bool {
        if self.anchored {
            match_parts(&self.parts, path)
        } else {
            (0..path.len()).any(|start| match_parts(&self.parts, &path[start..]))
        }
    }
}

/// Whether `parts` match all of `path`.
fn match_parts(parts: &[Part], path: &[&[u8]]) -> bool {
    match parts.split_first() {
        None => path.is_empty(),
        Some((Part::AnyDepth, rest)) => {
            (0..=path.len()).any(|skip| match_parts(rest, &path[skip..]))
        }
        Some((part, rest)) => path
            .split_first()
            .is_some_and(|(name, tail)| part.matches(name) && match_parts(rest, tail)),
    }
}

/// The exclude patterns of a backup, case-sensitive and not.
#[derive(Debug, Default)]
pub struct Patterns(Vec<Pattern>);

impl Patterns {
    /// Compile `excludes` (case-sensitive) and `iexcludes` (not).
    pub fn new(excludes: &[String], iexcludes: &[String]) -> Result<Self, EngineError> {
        let mut all = Vec::new();
        for (list, ignore_case) in [(excludes, false), (iexcludes, true)] {
            for p in list {
                all.extend(Pattern::new(p, ignore_case)?);
            }
        }
        Ok(Patterns(all))
    }

    /// No pattern at all.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether any pattern matches `path` (components from the root).
    pub fn matches(&self, path: &[&[u8]]) -> bool {
        self.0.iter().any(|p| p.matches(path))
    }
}

/// The components of `path` made absolute against `cwd` and cleaned lexically (no `.`,
/// `..` removes the component before it), as restic makes a backup target absolute.
pub fn absolute_components(path: &Path, cwd: &Path) -> Vec<Vec<u8>> {
    let mut out: Vec<Vec<u8>> = Vec::new();
    let whole = if path.is_absolute() {
        path.to_path_buf()
    } else {
        cwd.join(path)
    };
    for c in whole.components() {
        match c {
            Component::Normal(n) => out.push(n.as_bytes().to_vec()),
            Component::ParentDir => {
                out.pop();
            }
            Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
        }
    }
    out
}

/// A file whose presence in a directory leaves the rest of that directory out: `NAME`, or
/// `NAME:HEADER` when the file must also start with `HEADER` (as restic's
/// `--exclude-if-present`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TagFile {
    /// The file's name.
    pub name: OsString,
    /// What the file must start with, if anything.
    pub header: Option<Vec<u8>>,
}

impl TagFile {
    /// Parse `NAME` or `NAME:HEADER`.
    pub fn parse(spec: &str) -> Result<Self, EngineError> {
        let (name, header) = match spec.split_once(':') {
            Some((n, h)) => (n, Some(h.as_bytes().to_vec())),
            None => (spec, None),
        };
        if name.is_empty() || name.contains('/') || name == "." || name == ".." {
            return Err(EngineError::Usage(format!(
                "bad --exclude-if-present {spec:?}: give a file name, optionally NAME:HEADER"
            )));
        }
        Ok(TagFile {
            name: OsString::from(name),
            header,
        })
    }

    /// `CACHEDIR.TAG` with its signature (`--exclude-caches`).
    pub fn cachedir() -> Self {
        TagFile {
            name: OsString::from(CACHEDIR_TAG),
            header: Some(CACHEDIR_SIGNATURE.to_vec()),
        }
    }

    /// How many bytes of the file [`TagFile::valid`] needs.
    pub fn header_len(&self) -> usize {
        self.header.as_ref().map_or(0, Vec::len)
    }

    /// Whether a file starting with `start` (at least [`TagFile::header_len`] bytes of it,
    /// when the file has them) is a valid tag.
    pub fn valid(&self, start: &[u8]) -> bool {
        self.header.as_ref().is_none_or(|h| start.starts_with(h))
    }
}

/// What `--one-file-system` makes of an entry, from its device and the device of the source
/// it is below.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Boundary {
    /// On the source's file system: backed up as usual.
    Inside,
    /// A directory where another file system is mounted: kept, empty (as restic keeps it).
    MountPoint,
    /// Anything else on another file system: left out.
    Outside,
}

/// Where an entry on device `dev` stands when its source is on `source_dev`.
pub fn boundary(source_dev: u64, dev: u64, is_dir: bool) -> Boundary {
    match (dev == source_dev, is_dir) {
        (true, _) => Boundary::Inside,
        (false, true) => Boundary::MountPoint,
        (false, false) => Boundary::Outside,
    }
}

/// The patterns of an exclude file: one a line, surrounding blanks trimmed; blank lines and
/// lines starting with `#` are skipped.
pub fn parse_pattern_lines(text: &str) -> Vec<String> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(str::to_string)
        .collect()
}

/// Read an exclude file (`--exclude-file`, `--iexclude-file`); see [`parse_pattern_lines`].
pub fn read_pattern_file(path: &Path) -> Result<Vec<String>, EngineError> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        EngineError::Usage(format!(
            "cannot read the exclude file {}: {e}",
            path.display()
        ))
    })?;
    Ok(parse_pattern_lines(&text))
}

/// How a `--files-from` list is written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ListFormat {
    /// `--files-from`: a path or glob a line; blanks around it trimmed, blank lines and lines
    /// starting with `#` skipped.
    Patterns,
    /// `--files-from-verbatim`: a path a line, byte for byte; only empty lines skipped.
    Verbatim,
    /// `--files-from-raw`: paths separated by NUL bytes (`find -print0`); empty ones skipped.
    Raw,
}

impl ListFormat {
    /// The option that reads this format.
    pub fn option(self) -> &'static str {
        match self {
            ListFormat::Patterns => "--files-from",
            ListFormat::Verbatim => "--files-from-verbatim",
            ListFormat::Raw => "--files-from-raw",
        }
    }
}

/// The entries of a list as `format` writes them.
pub fn parse_list(bytes: &[u8], format: ListFormat) -> Vec<OsString> {
    let keep = |e: &&[u8]| !e.is_empty();
    let entries: Vec<&[u8]> = match format {
        ListFormat::Raw => bytes.split(|b| *b == 0).filter(keep).collect(),
        ListFormat::Verbatim => bytes
            .split(|b| *b == b'\n')
            .map(|l| l.strip_suffix(b"\r").unwrap_or(l))
            .filter(keep)
            .collect(),
        ListFormat::Patterns => bytes
            .split(|b| *b == b'\n')
            .map(|l| l.trim_ascii())
            .filter(|l| !l.is_empty() && !l.starts_with(b"#"))
            .collect(),
    };
    entries
        .into_iter()
        .map(|e| OsString::from_vec(e.to_vec()))
        .collect()
}

/// What a `--files-from` list names.
#[derive(Debug, Default)]
pub struct FileList {
    /// The paths, globs expanded, in the list's order.
    pub paths: Vec<PathBuf>,
    /// Globs that matched nothing (restic skips them with a warning).
    pub unmatched: Vec<String>,
}

/// Read a `--files-from` list; globs of a [`ListFormat::Patterns`] list are expanded (a
/// plain path is kept as it is, whether it exists or not: the backup says so).
pub fn read_file_list(path: &Path, format: ListFormat) -> Result<FileList, EngineError> {
    let bytes = std::fs::read(path).map_err(|e| {
        EngineError::Usage(format!(
            "cannot read the {} file {}: {e}",
            format.option(),
            path.display()
        ))
    })?;
    let mut out = FileList::default();
    for entry in parse_list(&bytes, format) {
        let is_glob = entry.to_string_lossy().contains(GLOB_CHARS);
        if format != ListFormat::Patterns || !is_glob {
            out.paths.push(PathBuf::from(entry));
            continue;
        }
        let found = expand_glob(Path::new(&entry))?;
        if found.is_empty() {
            out.unmatched.push(entry.to_string_lossy().into_owned());
        }
        out.paths.extend(found);
    }
    Ok(out)
}

/// The existing paths `pattern` matches, sorted within each directory (Go's filepath.Glob:
/// each component a glob of one name, `**` the same as `*`).
fn expand_glob(pattern: &Path) -> Result<Vec<PathBuf>, EngineError> {
    let mut found = vec![if pattern.is_absolute() {
        PathBuf::from("/")
    } else {
        PathBuf::new()
    }];
    for c in pattern.components() {
        let Component::Normal(name) = c else {
            if c == Component::ParentDir {
                found.iter_mut().for_each(|p| p.push(".."));
            }
            continue;
        };
        let text = name.to_string_lossy();
        if !text.contains(GLOB_CHARS) {
            found.iter_mut().for_each(|p| p.push(name));
            continue;
        }
        let glob = GlobBuilder::new(&text.replace("**", "*"))
            .literal_separator(true)
            .backslash_escape(true)
            .build()
            .map_err(|e| EngineError::Usage(format!("bad --files-from pattern {pattern:?}: {e}")))?
            .compile_matcher();
        let mut next = Vec::new();
        for dir in &found {
            let listed = if dir.as_os_str().is_empty() {
                std::fs::read_dir(".")
            } else {
                std::fs::read_dir(dir)
            };
            let Ok(listed) = listed else { continue };
            let mut names: Vec<OsString> = listed
                .flatten()
                .map(|e| e.file_name())
                .filter(|n| glob.is_match(Path::new(n)))
                .collect();
            names.sort();
            next.extend(names.into_iter().map(|n| dir.join(n)));
        }
        found = next;
    }
    found.retain(|p| std::fs::symlink_metadata(p).is_ok());
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn comps(path: &str) -> Vec<&[u8]> {
        path.split('/')
            .filter(|c| !c.is_empty())
            .map(str::as_bytes)
            .collect()
    }

    #[test]
    fn patterns_match_as_restic_reads_them() {
        // (pattern, ignore case, path, matches)
        let cases: &[(&str, bool, &str, bool)] = &[
            // A name at any depth.
            ("node_modules", false, "/home/u/app/node_modules", true),
            ("node_modules", false, "/node_modules", true),
            ("node_modules", false, "/home/u/node_modules_x", false),
            ("*.log", false, "/var/app/x.log", true),
            ("*.log", false, "/var/app/x.log.1", false),
            ("*.log", false, "/var/app.log/x", false),
            (".*", false, "/home/u/.cache", true),
            ("?at", false, "/x/cat", true),
            ("[ab]c", false, "/x/bc", true),
            ("[!ab]c", false, "/x/bc", false),
            ("{a,b}.txt", false, "/x/b.txt", true),
            // Relative paths match the end of a path.
            ("app/cache", false, "/srv/app/cache", true),
            ("app/cache", false, "/srv/app/cache/x", false),
            ("app/*/tmp", false, "/srv/app/v1/tmp", true),
            ("app/*/tmp", false, "/srv/app/v1/v2/tmp", false),
            ("app/cache/", false, "/srv/app/cache", true),
            // Absolute patterns match the whole path.
            ("/srv/app/cache", false, "/srv/app/cache", true),
            ("/srv/app/cache", false, "/x/srv/app/cache", false),
            ("/srv/app", false, "/srv/app/cache", false),
            ("/srv/*/cache", false, "/srv/app/cache", true),
            ("/srv/./app/../app/cache", false, "/srv/app/cache", true),
            ("//srv//app", false, "/srv/app", true),
            // `**`: any number of components, none included.
            ("/srv/**/cache", false, "/srv/cache", true),
            ("/srv/**/cache", false, "/srv/a/b/c/cache", true),
            ("/srv/**/cache", false, "/srv/a/b/c/cache2", false),
            ("/srv/**", false, "/srv/a/b", true),
            ("/srv/**", false, "/srv", true),
            ("/srv/**", false, "/srv2/a", false),
            ("**/*.o", false, "/a/b/c.o", true),
            ("a/**/**/b", false, "/x/a/y/z/b", true),
            ("a**b", false, "/x/aXYb", true),
            // Case.
            ("*.JPG", false, "/p/x.jpg", false),
            ("*.JPG", true, "/p/x.jpg", true),
            ("/Home/U/Cache", true, "/home/u/cache", true),
            ("photos", true, "/srv/PHOTOS", true),
        ];
        for &(pattern, ignore_case, path, want) in cases {
            let p = Pattern::new(pattern, ignore_case).unwrap().unwrap();
            assert_eq!(
                p.matches(&comps(path)),
                want,
                "{pattern:?} (ignore case: {ignore_case}) on {path:?}"
            );
        }
    }

    #[test]
    fn empty_patterns_name_nothing_and_bad_ones_are_named() {
        for p in ["", "/", ".", "./", "//"] {
            assert!(Pattern::new(p, false).unwrap().is_none(), "{p:?}");
        }
        let e = Pattern::new("[oops", false).unwrap_err().to_string();
        assert!(e.contains("[oops"), "{e}");
        let set = Patterns::new(&["*.tmp".into(), "".into()], &["CACHE".into()]).unwrap();
        assert!(set.matches(&comps("/a/b.tmp")));
        assert!(set.matches(&comps("/a/cache")));
        assert!(!set.matches(&comps("/a/b")));
        assert!(Patterns::new(&[], &[]).unwrap().is_empty());
    }

    #[test]
    fn sources_are_made_absolute_and_clean() {
        let cwd = Path::new("/work/dir");
        let cases: &[(&str, &str)] = &[
            ("data", "/work/dir/data"),
            ("./data/", "/work/dir/data"),
            ("../x/./y", "/work/x/y"),
            ("/abs/path", "/abs/path"),
            ("/abs/../other", "/other"),
            ("/", ""),
        ];
        for &(given, want) in cases {
            let got: Vec<String> = absolute_components(Path::new(given), cwd)
                .iter()
                .map(|c| String::from_utf8_lossy(c).into_owned())
                .collect();
            let want: Vec<&str> = want.split('/').filter(|c| !c.is_empty()).collect();
            assert_eq!(got, want, "{given:?}");
        }
    }

    #[test]
    fn tag_files_are_parsed_and_checked() {
        let t = TagFile::parse(".nobackup").unwrap();
        assert_eq!((t.name.to_str(), t.header_len()), (Some(".nobackup"), 0));
        assert!(t.valid(b""));
        let t = TagFile::parse("TAG:magic").unwrap();
        assert_eq!(t.header.as_deref(), Some(&b"magic"[..]));
        assert!(t.valid(b"magic and more"));
        assert!(!t.valid(b"magi"));
        for bad in ["", "a/b", ":x", ".."] {
            assert!(TagFile::parse(bad).is_err(), "{bad:?}");
        }
        let c = TagFile::cachedir();
        let valid = b"Signature: 8a477f597d28d172789f06886806bc55\n# made by x\n";
        assert!(c.valid(valid));
        assert!(!c.valid(b"Signature: 0000"));
        assert!(!c.valid(b""));
        assert_eq!(c.header_len(), CACHEDIR_SIGNATURE.len());
    }

    #[test]
    fn one_file_system_keeps_mount_points_empty_and_leaves_the_rest_out() {
        let cases = [
            (5, 5, true, Boundary::Inside),
            (5, 5, false, Boundary::Inside),
            (5, 7, true, Boundary::MountPoint),
            (5, 7, false, Boundary::Outside),
        ];
        for (source, dev, dir, want) in cases {
            assert_eq!(boundary(source, dev, dir), want, "{source} {dev} {dir}");
        }
    }

    #[test]
    fn lists_are_split_as_each_format_says() {
        let text = b"  # a comment\n/srv/a \n\n#x\nb c\r\n\n";
        let got = |f| {
            parse_list(text, f)
                .into_iter()
                .map(|e| e.to_string_lossy().into_owned())
                .collect::<Vec<_>>()
        };
        assert_eq!(got(ListFormat::Patterns), ["/srv/a", "b c"]);
        assert_eq!(
            got(ListFormat::Verbatim),
            ["  # a comment", "/srv/a ", "#x", "b c"]
        );
        let raw = parse_list(b"/a\nb\0\0#c\0", ListFormat::Raw);
        assert_eq!(raw, [OsString::from("/a\nb"), OsString::from("#c")]);
        let lines = parse_pattern_lines("*.tmp\n  # no\n\n /abs/dir/ \n");
        assert_eq!(lines, ["*.tmp", "/abs/dir/"]);
    }

    #[test]
    fn file_lists_expand_globs_and_name_what_matched_nothing() {
        let dir = tempfile::tempdir().unwrap();
        for f in ["a/x.txt", "a/y.txt", "a/z.bin", "b/x.txt"] {
            let p = dir.path().join(f);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, b"x").unwrap();
        }
        let d = dir.path().display();
        let list = dir.path().join("list");
        let text = format!("{d}/*/x.txt\n{d}/a/*.txt\n{d}/none/*\n{d}/missing\n# {d}/a\n");
        std::fs::write(&list, text).unwrap();
        let got = read_file_list(&list, ListFormat::Patterns).unwrap();
        let want: Vec<PathBuf> = ["a/x.txt", "b/x.txt", "a/x.txt", "a/y.txt", "missing"]
            .iter()
            .map(|f| dir.path().join(f))
            .collect();
        assert_eq!(got.paths, want);
        assert_eq!(got.unmatched, [format!("{d}/none/*")]);
        let verbatim = read_file_list(&list, ListFormat::Verbatim).unwrap();
        assert_eq!(verbatim.paths.len(), 5);
        assert!(verbatim.unmatched.is_empty());
        let e = read_file_list(&dir.path().join("nope"), ListFormat::Raw).unwrap_err();
        assert!(e.to_string().contains("--files-from-raw"), "{e}");
        let e = read_pattern_file(&dir.path().join("nope")).unwrap_err();
        assert!(e.to_string().contains("exclude file"), "{e}");
    }
}
