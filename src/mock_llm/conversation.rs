//! One view of a model request, whatever protocol it came in: the system
//! prompt and the turns so far, with each tool result named by its tool.
//! The protocol modules build it; fixtures match against it.

use serde::Serialize;
use serde_json::Value;

use super::fixtures::Protocol;

/// A request, reduced to what the script needs.
#[derive(Debug, Clone, PartialEq)]
pub struct ChatRequest {
    /// The protocol the request came in, so the answer goes back in it.
    pub protocol: Protocol,
    /// The model the client asked for; echoed in the answer.
    pub model: String,
    /// Whether the client asked for server-sent events.
    pub stream: bool,
    /// Whether an OpenAI stream ends with a usage chunk (Anthropic streams
    /// always carry usage).
    pub include_usage: bool,
    /// What was said so far.
    pub conversation: Conversation,
}

/// The conversation so far.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Conversation {
    /// The system prompt (OpenAI `system` and `developer` messages, or
    /// Anthropic's `system`), joined by blank lines.
    pub system: String,
    /// The turns in order.
    pub turns: Vec<Turn>,
}

/// One turn of the conversation.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Turn {
    /// Text from the user (or the agent's caller).
    User {
        /// The message's text blocks, joined by newlines.
        text: String,
    },
    /// An earlier answer of the model.
    Assistant {
        /// Its text; empty when it only called tools.
        text: String,
        /// The tools it called, in order.
        tool_calls: Vec<CallView>,
    },
    /// A tool's result, named by the tool the matching call asked for.
    ToolResult {
        /// The tool's name; empty if the call could not be found.
        tool: String,
        /// The result's text.
        text: String,
    },
}

/// A tool call of an earlier assistant turn.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CallView {
    /// The tool's name.
    pub name: String,
    /// The arguments as sent (a JSON value, or a string a client could not
    /// parse).
    pub arguments: Value,
}

impl Conversation {
    /// The first user message: the task the agent was given.
    pub fn task(&self) -> &str {
        self.user_texts().next().unwrap_or_default()
    }

    /// The latest user message.
    pub fn last_user(&self) -> &str {
        self.user_texts().last().unwrap_or_default()
    }

    /// How many tool results the conversation holds.
    pub fn tool_result_count(&self) -> usize {
        self.turns
            .iter()
            .filter(|turn| matches!(turn, Turn::ToolResult { .. }))
            .count()
    }

    /// How many answers the model gave so far.
    pub fn assistant_turn_count(&self) -> usize {
        self.turns
            .iter()
            .filter(|turn| matches!(turn, Turn::Assistant { .. }))
            .count()
    }

    /// The latest tool result, as `(tool, text)`.
    pub fn last_tool_result(&self) -> Option<(&str, &str)> {
        self.turns.iter().rev().find_map(|turn| match turn {
            Turn::ToolResult { tool, text } => Some((tool.as_str(), text.as_str())),
            _ => None,
        })
    }

    /// How many characters the prompt holds, for estimating input tokens.
    pub fn char_count(&self) -> usize {
        let turns: usize = self
            .turns
            .iter()
            .map(|turn| match turn {
                Turn::User { text } | Turn::ToolResult { text, .. } => text.chars().count(),
                Turn::Assistant { text, tool_calls } => {
                    text.chars().count()
                        + tool_calls
                            .iter()
                            .map(|call| {
                                call.name.chars().count() + call.arguments.to_string().len()
                            })
                            .sum::<usize>()
                }
            })
            .sum();
        self.system.chars().count() + turns
    }

    /// A stable fingerprint of the conversation (64-bit FNV-1a of its JSON
    /// form), so tool-call ids are the same on every run. FNV and not std's
    /// hasher, whose output may change between Rust releases.
    pub fn fingerprint(&self) -> u64 {
        // Serializing plain strings and vectors cannot fail; an empty string
        // would only make ids less varied, never wrong.
        let json = serde_json::to_string(self).unwrap_or_default();
        fnv1a(json.as_bytes())
    }

    fn user_texts(&self) -> impl DoubleEndedIterator<Item = &str> {
        self.turns.iter().filter_map(|turn| match turn {
            Turn::User { text } => Some(text.as_str()),
            _ => None,
        })
    }
}

/// The 64-bit FNV-1a offset basis, from the FNV specification.
const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;

/// The 64-bit FNV prime, from the FNV specification.
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

/// 64-bit FNV-1a: small, stable and good enough to tell conversations apart.
pub fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(FNV_OFFSET, |hash, byte| {
        (hash ^ u64::from(*byte)).wrapping_mul(FNV_PRIME)
    })
}

/// The text of a content field as both protocols send it: a string, null,
/// or a list of blocks of which the `text` ones count.
pub fn content_text(content: &Value) -> String {
    match content {
        Value::String(text) => text.clone(),
        Value::Array(blocks) => blocks
            .iter()
            .filter(|block| block["type"] == "text")
            .filter_map(|block| block["text"].as_str())
            .collect::<Vec<_>>()
            .join("\n"),
        _ => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn sample() -> Conversation {
        Conversation {
            system: "You are a coding agent".into(),
            turns: vec![
                Turn::User {
                    text: "first".into(),
                },
                Turn::Assistant {
                    text: String::new(),
                    tool_calls: vec![CallView {
                        name: "list_files".into(),
                        arguments: json!({}),
                    }],
                },
                Turn::ToolResult {
                    tool: "list_files".into(),
                    text: "README.md".into(),
                },
                Turn::User {
                    text: "second".into(),
                },
            ],
        }
    }

    #[test]
    fn the_views_read_the_turns() {
        let conversation = sample();
        assert_eq!(conversation.task(), "first");
        assert_eq!(conversation.last_user(), "second");
        assert_eq!(conversation.tool_result_count(), 1);
        assert_eq!(conversation.assistant_turn_count(), 1);
        assert_eq!(
            conversation.last_tool_result(),
            Some(("list_files", "README.md"))
        );
        assert_eq!(Conversation::default().task(), "");
        assert_eq!(Conversation::default().last_tool_result(), None);
    }

    #[test]
    fn fingerprints_are_stable_and_tell_conversations_apart() {
        // The FNV-1a test vectors from its specification.
        assert_eq!(fnv1a(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a(b"a"), 0xaf63_dc4c_8601_ec8c);
        let mut other = sample();
        other.system.push('!');
        assert_eq!(sample().fingerprint(), sample().fingerprint());
        assert_ne!(sample().fingerprint(), other.fingerprint());
    }

    #[test]
    fn content_is_a_string_or_text_blocks() {
        assert_eq!(content_text(&json!("hi")), "hi");
        assert_eq!(content_text(&Value::Null), "");
        assert_eq!(
            content_text(
                &json!([{"type": "text", "text": "a"}, {"type": "image"}, {"type": "text", "text": "b"}])
            ),
            "a\nb"
        );
    }
}
