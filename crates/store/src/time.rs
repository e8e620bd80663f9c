//! Times as people write and read them in the command line and the console: Unix seconds in,
//! UTC text out.

/// Unix seconds; `YYYY-MM-DD[THH:MM[:SS]][Z]` (UTC); or an age before `now` (`90m`, `6h`, `7d`).
pub fn parse_time(s: &str, now: i64) -> Result<i64, String> {
    let s = s.trim();
    let bad = || format!("{s:?} is not a time (Unix seconds, 2026-11-23T10:00:00Z, or 6h/7d ago)");
    if let Ok(n) = s.parse::<i64>() {
        return Ok(n);
    }
    if let Some(unit) = s.chars().last().filter(|c| "smhdw".contains(*c))
        && let Ok(n) = s[..s.len() - 1].parse::<i64>()
    {
        let mult = match unit {
            's' => 1,
            'm' => 60,
            'h' => 3_600,
            'd' => 86_400,
            _ => 604_800,
        };
        return Ok(now - n * mult);
    }
    let s2 = s.trim_end_matches('Z');
    let (date, time) = s2.split_once(['T', ' ']).unwrap_or((s2, "00:00:00"));
    let d: Vec<i64> = date
        .split('-')
        .map(|p| p.parse().map_err(|_| bad()))
        .collect::<Result<_, _>>()?;
    let t: Vec<i64> = time
        .split(':')
        .map(|p| p.parse().map_err(|_| bad()))
        .collect::<Result<_, _>>()?;
    if d.len() != 3 || t.is_empty() || t.len() > 3 {
        return Err(bad());
    }
    let days = days_from_civil(d[0], d[1], d[2]);
    Ok(days * 86_400 + t[0] * 3_600 + t.get(1).unwrap_or(&0) * 60 + t.get(2).unwrap_or(&0))
}

// The calendar is the message layer's, the one copy in the workspace.
use unspoof_message::date::days_from_civil;
pub use unspoof_message::date::format_time;
