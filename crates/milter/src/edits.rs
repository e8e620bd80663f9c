//! A rewritten message as milter edits: what changed between the message as received and the
//! engine's rewrite of it (`unspoof_engine::tag::rewrite`: subject prefix, banner, stale verdict
//! fields), said as CHGHEADER / INSHEADER / REPLBODY. The MTA applies them to its own copy, so
//! a tagged message looks the same whichever front door it came through.
//!
//! Header fields are compared per name, in order. The rewrite only changes values in place,
//! removes fields, or adds fields at the top, so per name one of these holds:
//! - the same count: each changed value is a CHGHEADER of that index;
//! - fewer, and what is left is a subsequence of the original: the others are deleted, last
//!   first so earlier indexes stay right;
//! - more, and the original is a subsequence: the new ones are inserted at the top;
//! - anything else: every original is deleted and every new one inserted (correct, just more
//!   edits).

use unspoof_engine::message::{Headers, RawHeader};

/// One header edit; values are as after the colon (leading space, CRLF folds).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeaderEdit {
    /// Replace the `index`-th (from 1) field called `name`; an empty value deletes it.
    Change {
        index: u32,
        name: String,
        value: String,
    },
    /// Insert a field at the top.
    Insert { name: String, value: String },
}

/// The edits from `original` to `rewritten`, and the new body when it changed.
pub fn diff(original: &[u8], rewritten: &[u8]) -> (Vec<HeaderEdit>, Option<Vec<u8>>) {
    let a = Headers::parse(original);
    let b = Headers::parse(rewritten);
    let key = |h: &RawHeader<'_>| h.name_trimmed().to_ascii_lowercase();
    // Names in order of first appearance in either message.
    let mut names: Vec<Vec<u8>> = Vec::new();
    for h in a.fields.iter().chain(b.fields.iter()) {
        let k = key(h);
        if !names.contains(&k) {
            names.push(k);
        }
    }
    let text = |v: &[u8]| String::from_utf8_lossy(v).into_owned();
    let mut edits = Vec::new();
    for name in &names {
        let olds: Vec<&RawHeader<'_>> = a.fields.iter().filter(|h| key(h) == *name).collect();
        let news: Vec<&RawHeader<'_>> = b.fields.iter().filter(|h| key(h) == *name).collect();
        let display = text(
            olds.first()
                .or(news.first())
                .map_or(&name[..], |h| h.name_trimmed()),
        );
        let change = |index: usize, value: &[u8]| HeaderEdit::Change {
            index: index as u32 + 1,
            name: display.clone(),
            value: text(value),
        };
        let delete = |index: usize| HeaderEdit::Change {
            index: index as u32 + 1,
            name: display.clone(),
            value: String::new(),
        };
        let insert = |h: &RawHeader<'_>| HeaderEdit::Insert {
            name: text(h.name_trimmed()),
            value: text(h.value),
        };
        if olds.len() == news.len() {
            for (i, (o, n)) in olds.iter().zip(&news).enumerate() {
                if o.value != n.value {
                    edits.push(change(i, n.value));
                }
            }
        } else if let Some(kept) = subsequence(&news, &olds) {
            // Fields removed: delete the ones not kept, last first.
            for i in (0..olds.len()).rev() {
                if !kept.contains(&i) {
                    edits.push(delete(i));
                }
            }
        } else if let Some(kept) = subsequence(&olds, &news) {
            // Fields added (at the top, where the rewrite puts them); inserted last first so
            // they end up in the rewrite's order.
            for (j, n) in news.iter().enumerate().rev() {
                if !kept.contains(&j) {
                    edits.push(insert(n));
                }
            }
        } else {
            for i in (0..olds.len()).rev() {
                edits.push(delete(i));
            }
            for n in news.iter().rev() {
                edits.push(insert(n));
            }
        }
    }
    let body_a = &original[a.body_offset.min(original.len())..];
    let body_b = &rewritten[b.body_offset.min(rewritten.len())..];
    let body = (body_a != body_b).then(|| body_b.to_vec());
    (edits, body)
}

/// If `small` is a subsequence of `big` (same values in order), the indexes of `big` it uses.
fn subsequence(small: &[&RawHeader<'_>], big: &[&RawHeader<'_>]) -> Option<Vec<usize>> {
    let mut used = Vec::with_capacity(small.len());
    let mut j = 0;
    for s in small {
        while j < big.len() && big[j].value != s.value {
            j += 1;
        }
        if j == big.len() {
            return None;
        }
        used.push(j);
        j += 1;
    }
    Some(used)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn change(index: u32, name: &str, value: &str) -> HeaderEdit {
        HeaderEdit::Change {
            index,
            name: name.into(),
            value: value.into(),
        }
    }

    #[test]
    fn nothing_changed_nothing_to_do() {
        let m = b"From: a@b\r\nSubject: x\r\n\r\nbody\r\n";
        assert_eq!(diff(m, m), (vec![], None));
    }

    #[test]
    fn subject_body_and_removed_fields() {
        let a = b"X-Unspoof-Verdict: accept\r\nFrom: a@b\r\nSubject: hi\r\n\tthere\r\nX-Unspoof-Verdict: x\r\n\r\nbody\r\n";
        let b = b"From: a@b\r\nSubject: [SUSPICIOUS] hi\r\n\tthere\r\n\r\nBANNER\r\nbody\r\n";
        let (edits, body) = diff(a, b);
        assert_eq!(
            edits,
            vec![
                change(2, "X-Unspoof-Verdict", ""),
                change(1, "X-Unspoof-Verdict", ""),
                change(1, "Subject", " [SUSPICIOUS] hi\r\n\tthere"),
            ]
        );
        assert_eq!(body.as_deref(), Some(&b"BANNER\r\nbody\r\n"[..]));
    }

    #[test]
    fn added_fields_go_on_top_and_middle_removals_keep_indexes() {
        let a = b"Received: 1\r\nReceived: 2\r\nReceived: 3\r\n\r\n";
        let b = b"Subject: [X]\r\nReceived: 1\r\nReceived: 3\r\n\r\n";
        let (edits, body) = diff(a, b);
        assert_eq!(
            edits,
            vec![
                change(2, "Received", ""),
                HeaderEdit::Insert {
                    name: "Subject".into(),
                    value: " [X]".into()
                },
            ]
        );
        assert_eq!(body, None);
    }

    #[test]
    fn unrelated_lists_are_replaced_whole() {
        let a = b"A: 1\r\nA: 2\r\n\r\n";
        let b = b"A: 3\r\n\r\n";
        let (edits, _) = diff(a, b);
        assert_eq!(
            edits,
            vec![
                change(2, "A", ""),
                change(1, "A", ""),
                HeaderEdit::Insert {
                    name: "A".into(),
                    value: " 3".into()
                },
            ]
        );
    }
}
