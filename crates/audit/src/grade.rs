//! The grade: 100 points, less the points of each finding by severity (critical 40, error 15,
//! warning 5, info 0), each code losing at most twice its severity's points however often it
//! is found (ten lookalikes are one problem, not ten). A: 90 and above, B: 80, C: 70, D: 60,
//! E: 50, F below. Every lost point is listed with its reason.

use serde::Serialize;

use crate::{Finding, Severity};

#[derive(Debug, Clone, Serialize)]
pub struct Lost {
    pub code: &'static str,
    pub points: u32,
    pub reason: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct Grade {
    pub letter: char,
    pub score: u32,
    pub lost: Vec<Lost>,
}

pub fn points(s: Severity) -> u32 {
    match s {
        Severity::Critical => 40,
        Severity::Error => 15,
        Severity::Warning => 5,
        Severity::Info => 0,
    }
}

pub fn letter(score: u32) -> char {
    match score {
        90.. => 'A',
        80..=89 => 'B',
        70..=79 => 'C',
        60..=69 => 'D',
        50..=59 => 'E',
        _ => 'F',
    }
}

pub fn grade(findings: &[Finding]) -> Grade {
    let mut lost: Vec<Lost> = Vec::new();
    let mut per_code: std::collections::HashMap<&'static str, u32> = Default::default();
    for f in findings {
        let p = points(f.severity);
        if p == 0 {
            continue;
        }
        let spent = per_code.entry(f.code).or_default();
        let cap = 2 * p;
        let take = p.min(cap.saturating_sub(*spent));
        *spent += take;
        if take > 0 {
            lost.push(Lost {
                code: f.code,
                points: take,
                reason: format!("{} ({})", f.message, f.rule),
            });
        }
    }
    let total: u32 = lost.iter().map(|l| l.points).sum();
    let score = 100u32.saturating_sub(total);
    Grade {
        letter: letter(score),
        score,
        lost,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Check, Finding};

    #[test]
    fn grades() {
        assert_eq!(grade(&[]).letter, 'A');
        let w = |code| Finding::new(code, Check::Lookalike, Severity::Warning, "r", "m");
        let many: Vec<Finding> = (0..10).map(|_| w("lookalike.registered")).collect();
        let g = grade(&many);
        assert_eq!((g.score, g.letter), (90, 'A'));
        let c = Finding::new(
            "dmarc.missing",
            Check::Dmarc,
            Severity::Critical,
            "RFC 9989",
            "none",
        );
        let g = grade(&[c, w("x")]);
        assert_eq!((g.score, g.letter, g.lost.len()), (55, 'E', 2));
    }
}
