//! A generic YAML node tree with a source location on every node and key.
//!
//! `cutover.yml` is first read into this tree and only then into typed
//! values, so that validation can report *every* problem with its line and
//! column instead of stopping at the first one (which is what deriving
//! `Deserialize` on the config types would do). Rejected alternative:
//! `#[serde(deny_unknown_fields)]` structs: one error per run, no
//! suggestions, no cross-references.

use std::fmt;

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_saphyr::{Location, Spanned};

/// A YAML value with located children.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Node {
    Null,
    Bool(bool),
    Int(i128),
    Float(f64),
    Str(String),
    Seq(Vec<Spanned<Node>>),
    /// Entries in document order; duplicates are kept so that they can be reported.
    Map(Vec<(Spanned<String>, Spanned<Node>)>),
}

impl Node {
    /// How the node is described in "expected X, found Y" messages.
    pub(crate) fn kind(&self) -> &'static str {
        match self {
            Node::Null => "nothing (null)",
            Node::Bool(_) => "a boolean",
            Node::Int(_) => "an integer",
            Node::Float(_) => "a decimal number",
            Node::Str(_) => "a string",
            Node::Seq(_) => "a list",
            Node::Map(_) => "a mapping",
        }
    }
}

impl<'de> Deserialize<'de> for Node {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(NodeVisitor)
    }
}

struct NodeVisitor;

impl<'de> Visitor<'de> for NodeVisitor {
    type Value = Node;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any YAML value")
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Node, E> {
        Ok(Node::Bool(v))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Node, E> {
        Ok(Node::Int(v.into()))
    }
    fn visit_i128<E: de::Error>(self, v: i128) -> Result<Node, E> {
        Ok(Node::Int(v))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Node, E> {
        Ok(Node::Int(v.into()))
    }
    fn visit_u128<E: de::Error>(self, v: u128) -> Result<Node, E> {
        Ok(i128::try_from(v).map_or(Node::Float(v as f64), Node::Int))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Node, E> {
        Ok(Node::Float(v))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Node, E> {
        Ok(Node::Str(v.to_owned()))
    }
    fn visit_string<E: de::Error>(self, v: String) -> Result<Node, E> {
        Ok(Node::Str(v))
    }
    fn visit_unit<E: de::Error>(self) -> Result<Node, E> {
        Ok(Node::Null)
    }
    fn visit_none<E: de::Error>(self) -> Result<Node, E> {
        Ok(Node::Null)
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Node, D::Error> {
        Node::deserialize(d)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Node, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element::<Spanned<Node>>()? {
            items.push(item);
        }
        Ok(Node::Seq(items))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Node, A::Error> {
        let mut entries = Vec::new();
        while let Some(key) = map.next_key::<Spanned<String>>()? {
            let value = map.next_value::<Spanned<Node>>()?;
            entries.push((key, value));
        }
        Ok(Node::Map(entries))
    }
}

/// The result of reading YAML text: a located tree, or the parser's error.
pub(crate) enum ParseOutcome {
    Tree(Spanned<Node>),
    Malformed {
        message: String,
        location: Option<Location>,
    },
}

/// Parses `text` as one YAML document. Duplicate keys are passed through so
/// that validation reports each of them with its own location.
pub(crate) fn parse_tree(text: &str) -> ParseOutcome {
    use serde_saphyr::MessageFormatter as _;

    let mut options = serde_saphyr::Options::default();
    options.duplicate_keys = serde_saphyr::DuplicateKeyPolicy::PassThrough;
    options.strict_booleans = true;
    options.with_snippet = false;
    match serde_saphyr::from_str_with_options::<Spanned<Node>>(text, options) {
        Ok(tree) => ParseOutcome::Tree(tree),
        Err(err) => ParseOutcome::Malformed {
            message: serde_saphyr::UserMessageFormatter
                .format_message(&err)
                .into_owned(),
            location: err.location(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree(text: &str) -> Spanned<Node> {
        match parse_tree(text) {
            ParseOutcome::Tree(t) => t,
            ParseOutcome::Malformed { message, location } => panic!("{message} at {location:?}"),
        }
    }

    #[test]
    fn spans_survive_nesting() {
        let t = tree("a:\n  b: [1, x]\n  c: { d: true }\n");
        let Node::Map(top) = &t.value else { panic!("{t:?}") };
        assert_eq!((top[0].0.referenced.line(), top[0].0.referenced.column()), (1, 1));
        let Node::Map(inner) = &top[0].1.value else {
            panic!()
        };
        assert_eq!(inner[0].0.value, "b");
        assert_eq!(
            (inner[0].0.referenced.line(), inner[0].0.referenced.column()),
            (2, 3)
        );
        let Node::Seq(items) = &inner[0].1.value else {
            panic!()
        };
        assert_eq!(items[1].value, Node::Str("x".into()));
        assert_eq!(
            (items[1].referenced.line(), items[1].referenced.column()),
            (2, 10)
        );
        let Node::Map(flow) = &inner[1].1.value else {
            panic!()
        };
        assert_eq!(flow[0].1.value, Node::Bool(true));
        assert_eq!(
            (flow[0].1.referenced.line(), flow[0].1.referenced.column()),
            (3, 11)
        );
    }

    #[test]
    fn scalars_are_typed_and_duplicates_kept() {
        let t = tree("a: 1\na: \"2\"\nb: ~\nc:\nd: 1.5\ne: yes\n");
        let Node::Map(m) = &t.value else { panic!() };
        let values: Vec<_> = m
            .iter()
            .map(|(k, v)| (k.value.as_str(), v.value.clone()))
            .collect();
        assert_eq!(
            values,
            vec![
                ("a", Node::Int(1)),
                ("a", Node::Str("2".into())),
                ("b", Node::Null),
                ("c", Node::Null),
                ("d", Node::Float(1.5)),
                ("e", Node::Str("yes".into())),
            ]
        );
    }

    #[test]
    fn empty_documents_are_null_and_malformed_ones_located() {
        for text in ["", "# only a comment\n"] {
            assert!(
                matches!(parse_tree(text), ParseOutcome::Tree(t) if t.value == Node::Null),
                "{text:?}"
            );
        }
        let ParseOutcome::Malformed { message, location } = parse_tree("a:\n  b: 1\n c: 2\n") else {
            panic!("accepted bad indentation")
        };
        assert!(!message.is_empty());
        let at = location.unwrap();
        assert_eq!((at.line(), at.column()), (3, 2));
    }
}
