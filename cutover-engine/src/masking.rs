//! The one masking layer: every line Cutover shows or stores about an environment's work (run
//! logs, run and stage errors, webhook bodies, service logs as the API serves them, job logs,
//! and the server's own log) passes a [`Masker`] built from the environment's settings
//! (`/<app>-<env>/env/…`) and secrets (`/<app>-<env>/secrets/…`, decrypted).
//!
//! Settings count: they are how an application gets its database password (they become
//! environment variables), so "secrets never appear in any log" has to include them.
//!
//! What is masked, each replaced by `****`:
//! * a value (and, for a multi-line value, each of its non-blank lines) of 4 or more
//!   characters wherever it occurs, and the same wherever one of its encodings occurs:
//!   base64 (standard and URL alphabets, padded or not, also inside a longer base64 text such
//!   as a Basic `Authorization` header, at each of the three byte alignments), hex (lower and
//!   upper case) and percent-encoding (`%XX` upper and lower case, of the reserved bytes or of
//!   every byte, and form encoding with `+`);
//! * a value of 1 to 3 characters only where it stands alone as a word: not preceded or
//!   followed by a letter, digit or `_`. `DEBUG=1` hides the `1` of `DEBUG=1` and of `run 1 of
//!   3`, but not those of `v10` or `12:01`. Masking such a value everywhere would destroy every
//!   log, and a secret that short is guessable anyway: give real secrets more characters.
//!
//! The server's own log gets one more pass over every environment's values of 4 or more
//! characters (its lines from hooks and jobs were masked with their environment's masker
//! first, short values included).
//!
//! Rejected: masking each place separately (the exact-substring filter of run logs missed
//! every other path), and masking in the runtime's log writer (its files would be clean, but
//! the runtime does not know the values, and it is rewritten for another reason); service logs
//! are masked where the engine serves them instead.

use std::borrow::Cow;
use std::collections::BTreeSet;
use std::sync::{Arc, RwLock};

use aho_corasick::{AhoCorasick, MatchKind};
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};

/// What a masked value is replaced with.
pub const MASK: &str = "****";

/// Values (and encoded forms) at least this long are masked wherever they occur.
pub const MIN_ANYWHERE: usize = 4;

/// Masks a set of secret values in text. Cheap to share (`Arc`); build one per environment.
#[derive(Default)]
pub struct Masker {
    /// Forms masked wherever they occur, leftmost-longest.
    anywhere: Option<AhoCorasick>,
    /// Short values, masked only as whole words.
    words: Vec<String>,
    /// Pieces of long values (see [`MAX_ENCODED`]), masked wherever they occur by a plain
    /// substring search: an automaton over megabytes of near-identical patterns took a minute
    /// to build.
    long: Vec<String>,
}

impl std::fmt::Debug for Masker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the values.
        write!(
            f,
            "Masker({} patterns, {} short words)",
            self.anywhere.as_ref().map_or(0, AhoCorasick::patterns_len),
            self.words.len()
        )
    }
}

impl Masker {
    /// A masker that masks nothing.
    pub fn none() -> Masker {
        Masker::default()
    }

    /// A masker for `values` (empty ones are ignored).
    pub fn new<S: AsRef<str>>(values: impl IntoIterator<Item = S>) -> Masker {
        let mut anywhere = BTreeSet::new();
        let mut words = BTreeSet::new();
        let mut long = BTreeSet::new();
        for value in values {
            add_forms(value.as_ref(), &mut anywhere, &mut words, &mut long);
        }
        let anywhere = (!anywhere.is_empty())
            .then(|| {
                AhoCorasick::builder()
                    .match_kind(MatchKind::LeftmostLongest)
                    .build(&anywhere)
                    .map_err(|e| tracing::error!(error = %e, "cannot build the log masker; masking short forms only"))
                    .ok()
            })
            .flatten();
        Masker {
            anywhere,
            words: words.into_iter().collect(),
            long: long.into_iter().collect(),
        }
    }

    /// This masker without its short words: for the server's log, where every environment's
    /// values meet (a `WORKERS=4` of one would hide every `run=4`), and whose lines from
    /// processes were masked with their own environment's masker before.
    pub fn without_short_words(mut self) -> Masker {
        self.words.clear();
        self
    }

    /// Whether this masker masks nothing.
    pub fn is_empty(&self) -> bool {
        self.anywhere.is_none() && self.words.is_empty() && self.long.is_empty()
    }

    /// `text` with every masked form replaced by [`MASK`].
    pub fn mask<'t>(&self, text: &'t str) -> Cow<'t, str> {
        let mut out = Cow::Borrowed(text);
        for piece in &self.long {
            if out.contains(piece.as_str()) {
                out = Cow::Owned(out.replace(piece.as_str(), MASK));
            }
        }
        if let Some(ac) = &self.anywhere
            && ac.is_match(text)
        {
            let mut masked = String::with_capacity(text.len());
            ac.replace_all_with(text, &mut masked, |_, _, dst| {
                dst.push_str(MASK);
                true
            });
            out = Cow::Owned(masked);
        }
        for word in &self.words {
            if let Some(masked) = mask_word(&out, word) {
                out = Cow::Owned(masked);
            }
        }
        out
    }

    /// As [`Masker::mask`], owned.
    pub fn mask_owned(&self, text: String) -> String {
        match self.mask(&text) {
            Cow::Borrowed(_) => text,
            Cow::Owned(masked) => masked,
        }
    }
}

fn is_word_char(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

/// `text` with each whole-word occurrence of `word` masked; `None` when there is none.
fn mask_word(text: &str, word: &str) -> Option<String> {
    let mut out = String::new();
    let mut copied = 0;
    for (at, _) in text.match_indices(word) {
        let end = at + word.len();
        if at < copied {
            continue;
        }
        let before = text[..at].chars().next_back();
        let after = text[end..].chars().next();
        if before.is_some_and(is_word_char) || after.is_some_and(is_word_char) {
            continue;
        }
        out.push_str(&text[copied..at]);
        out.push_str(MASK);
        copied = end;
    }
    if copied == 0 {
        return None;
    }
    out.push_str(&text[copied..]);
    Some(out)
}

/// The forms of one value: itself, each line of a multi-line value, and their encodings.
fn add_forms(
    value: &str,
    anywhere: &mut BTreeSet<String>,
    words: &mut BTreeSet<String>,
    long: &mut BTreeSet<String>,
) {
    let mut candidates = vec![value];
    if value.contains('\n') {
        candidates.extend(value.lines().map(str::trim).filter(|l| !l.is_empty()));
    }
    for candidate in candidates {
        if candidate.is_empty() {
            continue;
        }
        if candidate.chars().count() < MIN_ANYWHERE {
            words.insert(candidate.to_owned());
            continue;
        }
        if candidate.len() > MAX_ENCODED {
            // A long value (a blob, a bundle on one line): its plain form, in pieces that each
            // mask on their own, and no encodings, whose patterns would be megabytes per value
            // (building the masker took seconds with a few 64 KiB settings).
            for piece in pieces(candidate, PIECE) {
                if piece.chars().count() >= MIN_ANYWHERE {
                    long.insert(piece.to_owned());
                }
            }
            continue;
        }
        anywhere.insert(candidate.to_owned());
        for form in encodings(candidate.as_bytes()) {
            if form.len() >= MIN_ANYWHERE {
                anywhere.insert(form);
            }
        }
    }
}

/// Values (or lines of values) longer than this many bytes are masked in their plain form
/// only, in [`PIECE`]-byte pieces; shorter ones also in every encoding.
pub const MAX_ENCODED: usize = 1024;
/// The piece length of a long value's plain form.
const PIECE: usize = 4096;

/// `text` cut into pieces of at most `len` bytes, at character boundaries.
fn pieces(text: &str, len: usize) -> impl Iterator<Item = &str> {
    let mut rest = text;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let mut end = rest.len().min(len);
        while !rest.is_char_boundary(end) {
            end -= 1;
        }
        let (piece, tail) = rest.split_at(end);
        rest = tail;
        Some(piece)
    })
}

/// Base64 (both alphabets, padded, unpadded, and the part that is the same at every byte
/// alignment inside a longer text), hex and percent-encodings of `raw`.
fn encodings(raw: &[u8]) -> Vec<String> {
    let mut out = Vec::new();
    for (padded, unpadded) in [(STANDARD, STANDARD_NO_PAD), (URL_SAFE, URL_SAFE_NO_PAD)] {
        out.push(padded.encode(raw));
        out.push(unpadded.encode(raw));
        for offset in 0..3usize {
            // Behind `offset` other bytes, the characters that only `raw`'s bits decide.
            let mut shifted = vec![0u8; offset];
            shifted.extend_from_slice(raw);
            let text = unpadded.encode(&shifted);
            let first = (offset * 8).div_ceil(6);
            let last = (offset + raw.len()) * 8 / 6;
            if last > first {
                out.push(text[first..last].to_owned());
            }
        }
    }
    let hex: String = raw.iter().map(|b| format!("{b:02x}")).collect();
    // Every byte escaped, as some encoders do (`%73%33…`).
    let escaped: String = raw.iter().map(|b| format!("%{b:02x}")).collect();
    out.push(escaped.to_ascii_uppercase());
    out.push(escaped);
    out.push(hex.to_ascii_uppercase());
    out.push(hex);
    let unreserved = |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~');
    if !raw.iter().all(|&b| unreserved(b)) {
        let percent = crate::http::encode_segment_bytes(raw);
        // HTML form encoding: the same, with a space as `+`.
        let form = percent.replace("%20", "+");
        out.push(lower_escapes(&percent));
        out.push(percent);
        out.push(form);
    }
    out
}

/// `%2F` → `%2f`, leaving everything else alone.
fn lower_escapes(percent: &str) -> String {
    let mut out = String::with_capacity(percent.len());
    let mut escape = 0;
    for c in percent.chars() {
        if c == '%' {
            escape = 2;
            out.push(c);
        } else if escape > 0 {
            escape -= 1;
            out.push(c.to_ascii_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

/// The masker of the server's own log: every environment's values at once (a log line does
/// not always say which environment it is about). Updated by the engine at start and after
/// every change of a setting or secret.
static SERVER_LOG: RwLock<Option<Arc<Masker>>> = RwLock::new(None);

pub(crate) fn set_server_log_masker(masker: Masker) {
    *SERVER_LOG.write().unwrap_or_else(|e| e.into_inner()) = Some(Arc::new(masker));
}

/// A line of the server's log, masked with every environment's values (for the binary's
/// tracing writer).
pub fn mask_server_log(text: &str) -> Cow<'_, str> {
    let masker = SERVER_LOG.read().unwrap_or_else(|e| e.into_inner()).clone();
    match masker {
        Some(m) => m.mask(text),
        None => Cow::Borrowed(text),
    }
}

impl crate::Engine {
    /// The masker of `env`'s logs: its settings and its secrets (decrypted). A store that
    /// cannot be read gives the server log's masker (every environment's values as last
    /// read), never none.
    pub async fn log_masker(&self, env: &cutover_core::EnvName) -> Arc<Masker> {
        let prefix = self.config().param_prefix(env);
        let mut values = Vec::new();
        for part in ["env", "secrets"] {
            match self.store().param_list(&format!("{prefix}/{part}")).await {
                Ok(params) => values.extend(params.into_iter().filter_map(|p| self.plain_value(&p))),
                Err(e) => {
                    tracing::error!(env = %env, error = %e, "cannot read the settings to mask logs with");
                    return SERVER_LOG
                        .read()
                        .unwrap_or_else(|e| e.into_inner())
                        .clone()
                        .unwrap_or_default();
                }
            }
        }
        Arc::new(Masker::new(values))
    }

    /// As [`crate::Engine::log_masker`], for an environment named by the API.
    pub async fn log_masker_of(&self, env: &str) -> Result<Arc<Masker>, crate::EngineError> {
        let env = self.env_name(env)?;
        Ok(self.log_masker(&env).await)
    }

    /// As [`crate::Engine::log_masker`] for a stored environment name; one that no longer
    /// exists (a deleted integration environment) gets the server log's masker.
    pub(crate) async fn log_masker_named(&self, env: &str) -> Arc<Masker> {
        match self.env_name(env) {
            Ok(env) => self.log_masker(&env).await,
            Err(_) => SERVER_LOG
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .clone()
                .unwrap_or_default(),
        }
    }

    /// Rebuilds the server log's masker from every setting and secret in the store: at start
    /// and after each change of one.
    pub(crate) async fn refresh_server_log_masker(&self) {
        match self.store().param_list("/").await {
            Ok(params) => {
                let values = params
                    .into_iter()
                    .filter(|p| is_masked_key(&p.key))
                    .filter_map(|p| self.plain_value(&p));
                set_server_log_masker(Masker::new(values).without_short_words());
            }
            Err(e) => tracing::error!(error = %e, "cannot read the settings to mask the server log with"),
        }
    }

    /// A setting's or secret's decrypted value (`None` if it cannot be decrypted: then nothing
    /// can print it either).
    fn plain_value(&self, p: &cutover_store::ParamVersion) -> Option<String> {
        self.secret_key().decrypt(&p.value).ok()
    }
}

/// Whether a parameter's value is masked in logs: `/<app>-<env>/env/…` and
/// `/<app>-<env>/secrets/…`.
pub(crate) fn is_masked_key(key: &str) -> bool {
    matches!(key.split('/').nth(2), Some("env" | "secrets"))
}

#[cfg(test)]
mod tests {
    use base64::Engine as _;
    use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};

    use super::{MASK, Masker};

    #[test]
    fn long_values_are_masked_anywhere_short_ones_only_as_words() {
        let m = Masker::new(["hunter22", "1", "ab"]);
        assert_eq!(m.mask("password=hunter22;"), "password=****;");
        assert_eq!(m.mask("xhunter22x"), "x****x");
        assert_eq!(m.mask("DEBUG=1 run 1 of 3"), "DEBUG=**** run **** of 3");
        assert_eq!(m.mask("v10 12:01 ab1 cab ab"), "v10 12:01 ab1 cab ****");
        assert_eq!(m.mask("nothing here"), "nothing here");
        assert!(Masker::new([""]).is_empty());
        assert!(!format!("{m:?}").contains("hunter"));
        let server_log = Masker::new(["hunter22", "1"]).without_short_words();
        assert_eq!(server_log.mask("run=1 hunter22"), "run=1 ****");
    }

    #[test]
    fn each_line_of_a_multi_line_value_is_masked() {
        let m = Masker::new(["-----BEGIN KEY-----\nline-one-secret\r\n  line-two-secret\n"]);
        assert_eq!(m.mask("got line-one-secret"), format!("got {MASK}"));
        assert_eq!(m.mask("got line-two-secret!"), format!("got {MASK}!"));
    }

    #[test]
    fn encodings_are_masked_alone_and_inside_longer_text() {
        let secret = "p@ss w0rd/+?";
        let m = Masker::new([secret]);
        for form in [
            STANDARD.encode(secret),
            URL_SAFE_NO_PAD.encode(secret),
            hex(secret),
            hex(secret).to_uppercase(),
            "p%40ss%20w0rd%2F%2B%3F".to_owned(),
            "p%40ss%20w0rd%2f%2b%3f".to_owned(),
            "p%40ss+w0rd%2F%2B%3F".to_owned(),
            secret.bytes().map(|b| format!("%{b:02x}")).collect(),
        ] {
            let line = format!("value: {form} end");
            let masked = m.mask(&line);
            assert_eq!(masked, format!("value: {MASK} end"), "{form}");
        }
        // Basic credentials: the password at any alignment inside base64("user:password").
        for user in ["a", "ab", "abc"] {
            let basic = STANDARD.encode(format!("{user}:{secret}"));
            let masked = m.mask(&basic);
            assert!(masked.contains(MASK), "{user}: {masked}");
            let visible: String = masked.split(MASK).collect();
            assert!(visible.len() <= 10, "at most the user and edges stay: {masked}");
        }
    }

    #[test]
    fn long_values_are_masked_in_plain_pieces_without_encodings() {
        let long = "y".repeat(65_000);
        let values: Vec<String> = (0..16).map(|i| format!("{i:02}{long}")).collect();
        let m = Masker::new(&values);
        // No automaton over megabytes of encoded patterns (building one took a minute): each
        // value is its 4 KiB plain pieces, searched as substrings.
        assert!(m.anywhere.is_none(), "{m:?}");
        assert!(
            !m.long.is_empty() && m.long.iter().all(|p| p.len() <= super::PIECE),
            "{m:?}"
        );
        let line = format!("env: X={} end", values[3]);
        let masked = m.mask(&line);
        assert!(!masked.contains(&values[3][..5000]), "a long value is masked");
        assert!(masked.starts_with("env: X=") && masked.ends_with(" end"));
        let short = "hunter2-secret";
        let m = Masker::new([short]);
        assert_eq!(m.mask(&hex(short)), MASK, "short values keep their encodings");
    }

    fn hex(s: &str) -> String {
        s.bytes().map(|b| format!("{b:02x}")).collect()
    }
}
