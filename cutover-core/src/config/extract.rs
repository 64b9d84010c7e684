//! Typed extraction from the located node tree, collecting every error.
//!
//! Each helper reports into [`Ctx`] and returns `None` on failure, so the
//! walk continues past a bad value and the user sees all problems at once.

use std::path::Path;

use serde_saphyr::{Location, Spanned};

use super::error::{ConfigError, ConfigErrors};
use super::node::Node;
use super::values::nearest;
use crate::NameError;

pub(crate) type SNode = Spanned<Node>;

/// Collects errors for one file.
pub(crate) struct Ctx<'a> {
    file: &'a Path,
    errors: Vec<ConfigError>,
}

impl<'a> Ctx<'a> {
    pub(crate) fn new(file: &'a Path) -> Self {
        Self {
            file,
            errors: Vec::new(),
        }
    }

    pub(crate) fn file(&self) -> &'a Path {
        self.file
    }

    pub(crate) fn error(&mut self, at: Location, path: &str, message: impl Into<String>) {
        self.errors.push(ConfigError {
            file: self.file.to_path_buf(),
            line: at.line(),
            column: at.column(),
            path: path.to_owned(),
            message: message.into(),
        });
    }

    pub(crate) fn has_errors(&self) -> bool {
        !self.errors.is_empty()
    }

    /// The collected errors in document order (stable for equal positions).
    pub(crate) fn finish(mut self) -> ConfigErrors {
        self.errors.sort_by_key(|e| (e.line, e.column));
        ConfigErrors { errors: self.errors }
    }
}

/// `parent.key`, or `key` at the top.
pub(crate) fn join(parent: &str, key: &str) -> String {
    if parent.is_empty() {
        key.to_owned()
    } else {
        format!("{parent}.{key}")
    }
}

fn type_error(ctx: &mut Ctx<'_>, node: &SNode, path: &str, expected: &str) {
    let hint = match &node.value {
        Node::Int(_) | Node::Float(_) | Node::Bool(_) if expected.contains("string") => {
            " (put it in quotes if you meant it as text)"
        }
        Node::Str(s) if expected.contains("true or false") && matches!(s.as_str(), "true" | "false") => {
            " (remove the quotes)"
        }
        Node::Str(s) if expected.contains("number") && s.trim().parse::<i128>().is_ok() => {
            " (remove the quotes)"
        }
        _ => "",
    };
    let found = match &node.value {
        Node::Str(s) => format!("the string {s:?}"),
        Node::Int(i) => format!("{} {i}", node.value.kind()),
        Node::Bool(b) => format!("{} {b}", node.value.kind()),
        Node::Float(f) => format!("{} {f}", node.value.kind()),
        other => other.kind().to_owned(),
    };
    ctx.error(
        node.referenced,
        path,
        format!("expected {expected}, found {found}{hint}"),
    );
}

/// A mapping whose keys were checked against the accepted set.
pub(crate) struct Fields<'n> {
    path: String,
    at: Location,
    entries: Vec<(&'n Spanned<String>, &'n SNode)>,
    /// Keys suggested for unknown keys; their absence is not reported again.
    suggested: Vec<&'static str>,
}

impl<'n> Fields<'n> {
    /// Checks that `node` is a mapping (null counts as an empty one), that its
    /// keys are among `accepted` (suggesting the nearest otherwise) and that
    /// none repeats. `at` is where "missing key" errors point: the mapping's
    /// own key in its parent.
    pub(crate) fn new(
        ctx: &mut Ctx<'_>,
        node: &'n SNode,
        at: Location,
        path: &str,
        accepted: &[&'static str],
    ) -> Option<Self> {
        let entries = entries(ctx, node, path, "a mapping of keys to values")?;
        let mut kept = Vec::with_capacity(entries.len());
        let mut suggested = Vec::new();
        for (key, value) in entries {
            if accepted.contains(&key.value.as_str()) {
                kept.push((key, value));
                continue;
            }
            let message = match nearest(&key.value, accepted) {
                Some(s) => {
                    suggested.push(s);
                    format!("unknown key {:?}; did you mean {s:?}?", key.value)
                }
                None => format!(
                    "unknown key {:?}; accepted keys are {}",
                    key.value,
                    accepted.join(", ")
                ),
            };
            ctx.error(key.referenced, &join(path, &key.value), message);
        }
        Some(Self {
            path: path.to_owned(),
            at,
            entries: kept,
            suggested,
        })
    }

    /// The value of `key`, or `None` when absent or null.
    pub(crate) fn get(&self, key: &str) -> Option<&'n SNode> {
        self.entries
            .iter()
            .find(|(k, _)| k.value == key)
            .map(|(_, v)| *v)
            .filter(|v| v.value != Node::Null)
    }

    /// Like [`Fields::get`], but reports a missing key (unless an unknown key
    /// was already reported as its likely misspelling).
    pub(crate) fn required(&self, ctx: &mut Ctx<'_>, key: &'static str, what: &str) -> Option<&'n SNode> {
        let found = self.get(key);
        let misspelt = self.suggested.contains(&key) && self.entries.iter().all(|(k, _)| k.value != key);
        if found.is_none() && !misspelt {
            let message = format!("missing required key {key:?} ({what})");
            ctx.error(self.at, &self.path, message);
        }
        found
    }

    /// Like [`Fields::required`], but a null value counts as present (for
    /// sections whose emptiness gets its own message).
    pub(crate) fn required_even_if_null(
        &self,
        ctx: &mut Ctx<'_>,
        key: &'static str,
        what: &str,
    ) -> Option<&'n SNode> {
        let found = self.entries.iter().find(|(k, _)| k.value == key).map(|(_, v)| *v);
        if found.is_none() {
            return self.required(ctx, key, what);
        }
        found
    }

    /// Location of `key` in the file, or of the mapping when absent.
    pub(crate) fn key_location(&self, key: &str) -> Location {
        self.entries
            .iter()
            .find(|(k, _)| k.value == key)
            .map_or(self.at, |(k, _)| k.referenced)
    }

    pub(crate) fn path(&self, key: &str) -> String {
        join(&self.path, key)
    }
}

/// The entries of a mapping (null = none), reporting duplicate keys; the
/// first occurrence of a duplicated key is kept.
pub(crate) fn entries<'n>(
    ctx: &mut Ctx<'_>,
    node: &'n SNode,
    path: &str,
    expected: &str,
) -> Option<Vec<(&'n Spanned<String>, &'n SNode)>> {
    let list = match &node.value {
        Node::Map(list) => list,
        Node::Null => return Some(Vec::new()),
        _ => {
            type_error(ctx, node, path, expected);
            return None;
        }
    };
    let mut out: Vec<(&Spanned<String>, &SNode)> = Vec::with_capacity(list.len());
    for (key, value) in list {
        if let Some((first, _)) = out.iter().find(|(k, _)| k.value == key.value) {
            let message = format!(
                "duplicate key {:?} (first given at {}:{}); give each key once",
                key.value,
                first.referenced.line(),
                first.referenced.column()
            );
            ctx.error(key.referenced, &join(path, &key.value), message);
        } else {
            out.push((key, value));
        }
    }
    Some(out)
}

/// The entries of a mapping keyed by names of type `N`, reporting invalid names.
pub(crate) fn named_entries<'n, N>(
    ctx: &mut Ctx<'_>,
    node: &'n SNode,
    path: &str,
    expected: &str,
    parse: fn(&str) -> Result<N, NameError>,
) -> Vec<(N, Location, &'n SNode)> {
    let Some(list) = entries(ctx, node, path, expected) else {
        return Vec::new();
    };
    let mut out = Vec::with_capacity(list.len());
    for (key, value) in list {
        match parse(&key.value) {
            Ok(name) => out.push((name, key.referenced, value)),
            Err(e) => ctx.error(key.referenced, &join(path, &key.value), e.to_string()),
        }
    }
    out
}

pub(crate) fn string<'n>(ctx: &mut Ctx<'_>, node: &'n SNode, path: &str) -> Option<&'n str> {
    match &node.value {
        Node::Str(s) => Some(s),
        _ => {
            type_error(ctx, node, path, "a string");
            None
        }
    }
}

/// A string that must not be empty or only whitespace.
pub(crate) fn nonempty<'n>(ctx: &mut Ctx<'_>, node: &'n SNode, path: &str, what: &str) -> Option<&'n str> {
    let s = string(ctx, node, path)?;
    if s.trim().is_empty() {
        ctx.error(node.referenced, path, format!("must not be empty; give {what}"));
        return None;
    }
    Some(s)
}

pub(crate) fn boolean(ctx: &mut Ctx<'_>, node: &SNode, path: &str) -> Option<bool> {
    match &node.value {
        Node::Bool(b) => Some(*b),
        _ => {
            type_error(ctx, node, path, "true or false");
            None
        }
    }
}

/// A whole number in `min..=max`.
pub(crate) fn integer(ctx: &mut Ctx<'_>, node: &SNode, path: &str, min: i128, max: i128) -> Option<i128> {
    let Node::Int(n) = node.value else {
        type_error(ctx, node, path, "a whole number");
        return None;
    };
    if n < min {
        ctx.error(
            node.referenced,
            path,
            format!("must be at least {min}, found {n}"),
        );
        return None;
    }
    if n > max {
        ctx.error(node.referenced, path, format!("must be at most {max}, found {n}"));
        return None;
    }
    Some(n)
}

/// A `u32` that is at least `min`.
pub(crate) fn count(ctx: &mut Ctx<'_>, node: &SNode, path: &str, min: u32) -> Option<u32> {
    integer(ctx, node, path, min.into(), u32::MAX.into()).and_then(|n| u32::try_from(n).ok())
}

/// A string naming one of `choices`, mapped to its value.
pub(crate) fn choice<T: Copy>(
    ctx: &mut Ctx<'_>,
    node: &SNode,
    path: &str,
    what: &str,
    choices: &[(&str, T)],
) -> Option<T> {
    let s = string(ctx, node, path)?;
    if let Some((_, v)) = choices.iter().find(|(name, _)| *name == s) {
        return Some(*v);
    }
    let names: Vec<&str> = choices.iter().map(|(n, _)| *n).collect();
    let hint = match nearest(s, &names) {
        Some(n) => format!(" did you mean {n:?}?"),
        None => String::new(),
    };
    let message = format!("unknown {what} {s:?};{hint} expected one of {}", names.join(", "));
    ctx.error(node.referenced, path, message);
    None
}

/// A string parsed by `parse`, whose error message is reported as is.
pub(crate) fn parsed<T>(
    ctx: &mut Ctx<'_>,
    node: &SNode,
    path: &str,
    parse: impl FnOnce(&str) -> Result<T, String>,
) -> Option<T> {
    let s = string(ctx, node, path)?;
    match parse(s) {
        Ok(v) => Some(v),
        Err(message) => {
            ctx.error(node.referenced, path, message);
            None
        }
    }
}

/// The items of a list (null = empty).
pub(crate) fn list<'n>(
    ctx: &mut Ctx<'_>,
    node: &'n SNode,
    path: &str,
    expected: &str,
) -> Option<&'n [SNode]> {
    match &node.value {
        Node::Seq(items) => Some(items),
        Node::Null => Some(&[]),
        _ => {
            type_error(ctx, node, path, expected);
            None
        }
    }
}
