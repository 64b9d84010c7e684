//! The build context: the release directory as a tar, filtered by its
//! `.dockerignore` and streamed to the engine while it is written.
//!
//! `.dockerignore` follows Docker's documented rules (moby's `patternmatcher`):
//! one pattern a line, `#` comments, blank lines and surrounding whitespace
//! ignored, each pattern cleaned like Go's `filepath.Clean` (a leading `/` and
//! `.`/`..` elements removed); `*` is any run of characters but `/`, `?` one
//! character but `/`, `[...]` a class, `\` escapes, and `**` any number of
//! directories, none included. A path is excluded when the last pattern that
//! matches it, or one of its parent directories, is not a `!` exception. The
//! Dockerfile and `.dockerignore` are always sent (Docker sends them too; they
//! need not be in the image). A directory excluded with no exception patterns
//! at all is not even read; with exceptions it is walked, and only re-included
//! entries are sent.
//!
//! Matching compiles a pattern into tokens and runs a dynamic-programming
//! matcher (pattern length × path length), so no pattern a repository carries
//! can make it backtrack exponentially. Rejected: the `ignore`/`gix-ignore`
//! crates, whose gitignore semantics differ (unanchored names, trailing `/`);
//! a regex per pattern (a dependency for one use).
//!
//! Streaming: [`stream`] packs in a blocking task into a bounded channel of
//! 64 KiB chunks that the request body reads, so at most a few hundred KiB of
//! context are in memory whatever the release's size; the walk's order is
//! sorted, symlinks are kept as symlinks (never followed out of the tree).

use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use futures::Stream;

/// Chunks of the tar handed to the engine.
const CHUNK: usize = 64 * 1024;
/// Chunks queued between the packer and the request body.
const QUEUED: usize = 4;

/// One compiled `.dockerignore` line.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Pattern {
    tokens: Vec<Token>,
    exception: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    Lit(char),
    /// `*`: any run of characters but `/`.
    Star,
    /// `?`: one character but `/`.
    One,
    /// `**/` (not at the end): any number of whole directories, none included.
    Dirs,
    /// `**` at the end: anything.
    All,
    /// `[...]`: ranges, negated with a leading `^` or `!`.
    Class {
        ranges: Vec<(char, char)>,
        negated: bool,
    },
}

/// The patterns of one `.dockerignore`.
#[derive(Debug, Clone, Default)]
pub(crate) struct Ignore {
    patterns: Vec<Pattern>,
}

impl Ignore {
    /// Reads a `.dockerignore`'s text.
    pub(crate) fn parse(text: &str) -> Ignore {
        let mut patterns = Vec::new();
        for line in text.lines() {
            if line.starts_with('#') {
                continue;
            }
            let mut line = line.trim();
            let exception = line.starts_with('!');
            if exception {
                line = line[1..].trim();
            }
            let cleaned = clean(line);
            if cleaned.is_empty() {
                continue;
            }
            patterns.push(Pattern {
                tokens: compile(&cleaned),
                exception,
            });
        }
        Ignore { patterns }
    }

    /// Whether `path` (relative, `/`-separated) is left out of the context.
    pub(crate) fn excludes(&self, path: &str) -> bool {
        let mut excluded = false;
        for p in &self.patterns {
            if p.exception == excluded && matches_or_parent(&p.tokens, path) {
                excluded = !p.exception;
            }
        }
        excluded
    }

    fn has_exceptions(&self) -> bool {
        self.patterns.iter().any(|p| p.exception)
    }

    pub(crate) fn len(&self) -> usize {
        self.patterns.len()
    }
}

/// The largest `.dockerignore` read (the release's own file, so bounded like any input).
const IGNORE_LIMIT: u64 = 1 << 20;

/// The release directory's `.dockerignore` (none: nothing ignored). A symlink is not
/// followed (it could point anywhere on this machine); one larger than 1 MiB is refused.
pub(crate) fn read_ignore(dir: &Path) -> io::Result<Ignore> {
    let path = dir.join(".dockerignore");
    let meta = match std::fs::symlink_metadata(&path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Ignore::default()),
        Err(e) => return Err(e),
    };
    if !meta.is_file() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            ".dockerignore is not a regular file (a symlink or a directory); make it a file",
        ));
    }
    let mut text = String::new();
    std::fs::File::open(&path)?
        .take(IGNORE_LIMIT + 1)
        .read_to_string(&mut text)?;
    if text.len() as u64 > IGNORE_LIMIT {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            ".dockerignore is larger than 1 MiB; shorten it (use ** patterns)",
        ));
    }
    Ok(Ignore::parse(&text))
}

/// Go's `filepath.Clean` for a relative pattern: `.` and empty elements dropped, `..`
/// removes the element before it (never above the root), no leading `/`.
fn clean(pattern: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for part in pattern.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            p => parts.push(p),
        }
    }
    parts.join("/")
}

fn compile(pattern: &str) -> Vec<Token> {
    let chars: Vec<char> = pattern.chars().collect();
    let mut tokens = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        match chars[i] {
            '*' if chars.get(i + 1) == Some(&'*') => {
                i += 2;
                if chars.get(i) == Some(&'/') {
                    i += 1;
                }
                tokens.push(if i >= chars.len() { Token::All } else { Token::Dirs });
                continue;
            }
            '*' => tokens.push(Token::Star),
            '?' => tokens.push(Token::One),
            '\\' if i + 1 < chars.len() => {
                i += 1;
                tokens.push(Token::Lit(chars[i]));
            }
            '[' => {
                if let Some((class, next)) = class(&chars, i) {
                    tokens.push(class);
                    i = next;
                    continue;
                }
                tokens.push(Token::Lit('['));
            }
            c => tokens.push(Token::Lit(c)),
        }
        i += 1;
    }
    tokens
}

/// The class starting at `chars[start] == '['`, and the index after its `]`.
fn class(chars: &[char], start: usize) -> Option<(Token, usize)> {
    let mut i = start + 1;
    let negated = matches!(chars.get(i), Some('^' | '!'));
    if negated {
        i += 1;
    }
    let mut ranges = Vec::new();
    let mut first = true;
    loop {
        let mut c = *chars.get(i)?;
        if c == ']' && !first {
            return Some((Token::Class { ranges, negated }, i + 1));
        }
        first = false;
        if c == '\\' {
            i += 1;
            c = *chars.get(i)?;
        }
        if chars.get(i + 1) == Some(&'-') && chars.get(i + 2).is_some_and(|e| *e != ']') {
            let mut end = chars[i + 2];
            i += 2;
            if end == '\\' {
                i += 1;
                end = *chars.get(i)?;
            }
            ranges.push((c, end));
        } else {
            ranges.push((c, c));
        }
        i += 1;
    }
}

/// Whether the pattern matches `path` or one of its parent directories.
fn matches_or_parent(tokens: &[Token], path: &str) -> bool {
    let chars: Vec<char> = path.chars().collect();
    if matches(tokens, &chars) {
        return true;
    }
    chars
        .iter()
        .enumerate()
        .filter(|(_, c)| **c == '/')
        .any(|(i, _)| matches(tokens, &chars[..i]))
}

/// The whole of `path` against the whole pattern: `ok[t][p]` says whether
/// `tokens[t..]` matches `path[p..]`, filled from the end.
fn matches(tokens: &[Token], path: &[char]) -> bool {
    let (n, m) = (tokens.len(), path.len());
    let mut ok = vec![vec![false; m + 1]; n + 1];
    ok[n][m] = true;
    for t in (0..n).rev() {
        for p in (0..=m).rev() {
            ok[t][p] = match &tokens[t] {
                Token::Lit(c) => p < m && path[p] == *c && ok[t + 1][p + 1],
                Token::One => p < m && path[p] != '/' && ok[t + 1][p + 1],
                Token::Class { ranges, negated } => {
                    p < m
                        && path[p] != '/'
                        && ranges.iter().any(|(a, b)| (*a..=*b).contains(&path[p])) != *negated
                        && ok[t + 1][p + 1]
                }
                Token::Star => ok[t + 1][p] || (p < m && path[p] != '/' && ok[t][p + 1]),
                Token::All => true,
                // `(.*/)?`: nothing, or anything up to and including a `/`.
                Token::Dirs => ok[t + 1][p] || (p..m).any(|q| path[q] == '/' && ok[t + 1][q + 1]),
            };
        }
    }
    ok[0][0]
}

/// What [`stream`] sent, read once the stream has ended.
#[derive(Debug, Clone, Default)]
pub(crate) struct Sent {
    bytes: Arc<AtomicU64>,
}

impl Sent {
    pub(crate) fn bytes(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed)
    }
}

/// The tar of `dir` without what its `.dockerignore` excludes (the file at
/// `dockerfile` always in), as a stream the request body reads while a blocking task
/// writes it. An error while packing ends the stream with that error.
pub(crate) fn stream(
    dir: PathBuf,
    dockerfile: String,
    ignore: Ignore,
) -> (impl Stream<Item = io::Result<Bytes>> + Send + 'static, Sent) {
    let (tx, rx) = tokio::sync::mpsc::channel::<io::Result<Bytes>>(QUEUED);
    let sent = Sent::default();
    let counter = sent.bytes.clone();
    tokio::task::spawn_blocking(move || {
        let writer = ChannelWriter {
            tx: tx.clone(),
            buffer: Vec::with_capacity(CHUNK),
            sent: counter,
        };
        let result = pack(&dir, &dockerfile, &ignore, writer).and_then(|mut w| w.flush());
        if let Err(e) = result
            && e.kind() != io::ErrorKind::BrokenPipe
        {
            let _ = tx.blocking_send(Err(io::Error::new(
                e.kind(),
                format!("packing the build context {}: {e}", dir.display()),
            )));
        }
    });
    let body = futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|item| (item, rx)) });
    (body, sent)
}

/// An `io::Write` that hands full chunks to the channel (blocking while it is full).
struct ChannelWriter {
    tx: tokio::sync::mpsc::Sender<io::Result<Bytes>>,
    buffer: Vec<u8>,
    sent: Arc<AtomicU64>,
}

impl ChannelWriter {
    fn send_buffer(&mut self) -> io::Result<()> {
        if self.buffer.is_empty() {
            return Ok(());
        }
        let chunk = std::mem::replace(&mut self.buffer, Vec::with_capacity(CHUNK));
        let len = chunk.len() as u64;
        self.tx.blocking_send(Ok(Bytes::from(chunk))).map_err(|_| {
            io::Error::new(
                io::ErrorKind::BrokenPipe,
                "the engine stopped reading the context",
            )
        })?;
        self.sent.fetch_add(len, Ordering::Relaxed);
        Ok(())
    }
}

impl Write for ChannelWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let room = CHUNK - self.buffer.len();
        let n = room.min(data.len());
        self.buffer.extend_from_slice(&data[..n]);
        if self.buffer.len() >= CHUNK {
            self.send_buffer()?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.send_buffer()
    }
}

/// Writes the filtered tar of `dir` into `out` and returns it.
pub(crate) fn pack<W: Write>(dir: &Path, dockerfile: &str, ignore: &Ignore, out: W) -> io::Result<W> {
    let mut builder = tar::Builder::new(out);
    builder.follow_symlinks(false);
    builder.mode(tar::HeaderMode::Deterministic);
    let dockerfile = clean(dockerfile);
    walk(&mut builder, dir, "", &dockerfile, ignore)?;
    builder.into_inner()
}

fn walk<W: Write>(
    builder: &mut tar::Builder<W>,
    root: &Path,
    relative: &str,
    dockerfile: &str,
    ignore: &Ignore,
) -> io::Result<()> {
    let here = if relative.is_empty() {
        root.to_owned()
    } else {
        root.join(relative)
    };
    let mut entries: Vec<_> = std::fs::read_dir(&here)?.collect::<io::Result<_>>()?;
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let name = entry.file_name();
        let Some(name) = name.to_str() else {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{} is not a UTF-8 file name", entry.path().display()),
            ));
        };
        let path = if relative.is_empty() {
            name.to_owned()
        } else {
            format!("{relative}/{name}")
        };
        let kind = entry.file_type()?;
        let always = path == dockerfile || path == ".dockerignore";
        let excluded = !always && ignore.excludes(&path);
        if kind.is_dir() {
            let holds_dockerfile = dockerfile.starts_with(&format!("{path}/"));
            if excluded && !ignore.has_exceptions() && !holds_dockerfile {
                continue;
            }
            if !excluded {
                builder.append_dir(&path, entry.path())?;
            }
            walk(builder, root, &path, dockerfile, ignore)?;
        } else if excluded {
            // Left out.
        } else if kind.is_file() {
            // Written as a plain file: `append_path` turns a sparse file into a GNU sparse
            // entry (type 'S'), which dockerd refuses ("unhandled tar header type 83").
            let file = std::fs::File::open(entry.path())?;
            let meta = file.metadata()?;
            let mut header = tar::Header::new_gnu();
            header.set_metadata_in_mode(&meta, tar::HeaderMode::Deterministic);
            header.set_size(meta.len());
            builder.append_data(&mut header, &path, file.take(meta.len()))?;
        } else {
            builder.append_path_with_name(entry.path(), &path)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ignore(text: &str) -> Ignore {
        Ignore::parse(text)
    }

    #[test]
    fn dockers_documented_examples() {
        // https://docs.docker.com/build/concepts/context/#dockerignore-files
        let i = ignore("# comment\n*/temp*\n*/*/temp*\ntemp?\n");
        assert!(i.excludes("somedir/temporary.txt"));
        assert!(i.excludes("somedir/temp"));
        assert!(i.excludes("somedir/subdir/temporary.txt"));
        assert!(i.excludes("tempa") && i.excludes("tempb"));
        assert!(!i.excludes("temporary.txt") && !i.excludes("a/b/c/temp.txt"));
        assert!(!i.excludes("# comment"));

        let i = ignore("**/*.go\n");
        assert!(i.excludes("main.go") && i.excludes("a/b/c.go"));
        assert!(!i.excludes("main.rs"));

        let i = ignore("*.md\n!README.md\n");
        assert!(i.excludes("CHANGES.md") && !i.excludes("README.md"));

        let i = ignore("*.md\n!README*.md\nREADME-secret.md\n");
        assert!(i.excludes("CHANGES.md") && !i.excludes("README-public.md"));
        assert!(i.excludes("README-secret.md"));

        let i = ignore("*.md\nREADME-secret.md\n!README*.md\n");
        assert!(!i.excludes("README-secret.md"));
    }

    #[test]
    fn directories_parents_and_cleaning() {
        // A matched directory excludes what is in it.
        let i = ignore("node_modules\n/build/\n./tmp/../cache\n");
        assert!(i.excludes("node_modules") && i.excludes("node_modules/a/b.js"));
        assert!(i.excludes("build/out.o"));
        assert!(i.excludes("cache/x"));
        assert!(
            !i.excludes("src/node_modules"),
            "patterns are anchored at the root"
        );
        // `**` in the middle and at the end.
        let i = ignore("a/**/z\nlogs/**\n");
        assert!(i.excludes("a/z") && i.excludes("a/b/c/z"));
        assert!(!i.excludes("a/bz"));
        assert!(i.excludes("logs/x/y.log"));
        // Classes, `?`, escapes.
        let i = ignore("[a-c]x\n[!a-c]y\nf?o\n\\*lit\n");
        assert!(i.excludes("bx") && !i.excludes("dx"));
        assert!(i.excludes("dy") && !i.excludes("ay"));
        assert!(i.excludes("foo") && !i.excludes("f/o"));
        assert!(i.excludes("*lit") && !i.excludes("xlit"));
        // Blank lines and bare whitespace are no patterns.
        assert_eq!(ignore("\n   \n!\n").len(), 0);
    }

    #[test]
    fn the_ignore_file_is_read_bounded_and_never_through_a_symlink() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(read_ignore(dir.path()).unwrap().len(), 0);
        std::fs::write(dir.path().join(".dockerignore"), "a\n!b\n").unwrap();
        assert_eq!(read_ignore(dir.path()).unwrap().len(), 2);
        std::fs::write(dir.path().join(".dockerignore"), "x".repeat((1 << 20) + 1)).unwrap();
        let err = read_ignore(dir.path()).unwrap_err();
        assert!(err.to_string().contains("larger than 1 MiB"), "{err}");
        std::fs::remove_file(dir.path().join(".dockerignore")).unwrap();
        std::os::unix::fs::symlink("/etc/hostname", dir.path().join(".dockerignore")).unwrap();
        let err = read_ignore(dir.path()).unwrap_err();
        assert!(err.to_string().contains("not a regular file"), "{err}");
    }

    #[test]
    fn a_long_pattern_of_stars_does_not_backtrack() {
        let pattern = "*a".repeat(40) + "b";
        let i = ignore(&pattern);
        // Exponential for a naive backtracker; a table of 81 × 200 cells here.
        assert!(!i.excludes(&"a".repeat(200)));
    }

    fn names(bytes: &[u8]) -> Vec<String> {
        let mut archive = tar::Archive::new(bytes);
        let mut names: Vec<String> = archive
            .entries()
            .unwrap()
            .map(|e| {
                e.unwrap()
                    .path()
                    .unwrap()
                    .display()
                    .to_string()
                    .trim_end_matches('/')
                    .to_owned()
            })
            .collect();
        names.sort();
        names
    }

    #[test]
    fn the_context_holds_the_tree_without_what_is_ignored() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("www")).unwrap();
        std::fs::create_dir_all(dir.path().join("big/keep")).unwrap();
        std::fs::write(dir.path().join("www/health"), "ok").unwrap();
        std::fs::write(dir.path().join("www/notes.md"), "x").unwrap();
        std::fs::write(dir.path().join("big/blob"), "x").unwrap();
        std::fs::write(dir.path().join("big/keep/this"), "x").unwrap();
        std::fs::write(dir.path().join("Dockerfile"), "FROM x").unwrap();
        std::os::unix::fs::symlink("/etc/passwd", dir.path().join("www/link")).unwrap();
        std::fs::write(
            dir.path().join(".dockerignore"),
            "Dockerfile\n.dockerignore\n**/*.md\nbig\n",
        )
        .unwrap();
        let i = Ignore::parse(&std::fs::read_to_string(dir.path().join(".dockerignore")).unwrap());
        let bytes = pack(dir.path(), "Dockerfile", &i, Vec::new()).unwrap();
        assert_eq!(
            names(&bytes),
            [".dockerignore", "Dockerfile", "www", "www/health", "www/link"]
        );
        // The symlink stays a symlink.
        let mut archive = tar::Archive::new(bytes.as_slice());
        let link = archive
            .entries()
            .unwrap()
            .map(Result::unwrap)
            .find(|e| e.path().unwrap().ends_with("link"))
            .unwrap();
        assert!(link.header().entry_type().is_symlink());
        // An exception re-includes a file of an excluded directory (and only it).
        let i = Ignore::parse("big\n!big/keep/this\n");
        let bytes = pack(dir.path(), "Dockerfile", &i, Vec::new()).unwrap();
        let names = names(&bytes);
        assert!(names.contains(&"big/keep/this".to_owned()), "{names:?}");
        assert!(!names.contains(&"big/blob".to_owned()), "{names:?}");
    }

    #[tokio::test]
    async fn the_stream_carries_the_tar_in_chunks() {
        use futures::StreamExt as _;
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("Dockerfile"), "FROM x").unwrap();
        std::fs::write(dir.path().join("data"), vec![7u8; 3 * CHUNK + 10]).unwrap();
        // Sparse: a plain entry, never GNU sparse (dockerd refuses type 'S').
        std::fs::File::create(dir.path().join("sparse"))
            .unwrap()
            .set_len(1 << 20)
            .unwrap();
        let (body, sent) = stream(dir.path().to_owned(), "Dockerfile".to_owned(), Ignore::default());
        let chunks: Vec<Bytes> = body.map(Result::unwrap).collect().await;
        assert!(chunks.len() > 3 && chunks.iter().all(|c| c.len() <= CHUNK));
        let all: Vec<u8> = chunks.concat();
        assert_eq!(all.len() as u64, sent.bytes());
        assert_eq!(names(&all), ["Dockerfile", "data", "sparse"]);
        let mut archive = tar::Archive::new(all.as_slice());
        for entry in archive.entries().unwrap() {
            let entry = entry.unwrap();
            assert!(
                entry.header().entry_type().is_file(),
                "{:?}",
                entry.header().entry_type()
            );
        }
        // A missing directory ends the stream with an error.
        let (body, _) = stream(
            dir.path().join("absent"),
            "Dockerfile".to_owned(),
            Ignore::default(),
        );
        let items: Vec<_> = body.collect().await;
        assert!(items.last().is_some_and(Result::is_err), "{items:?}");
    }
}
