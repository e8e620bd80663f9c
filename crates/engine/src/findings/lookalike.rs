//! lookalike: being written.

use super::Context;
use crate::verdict::Reason;

pub fn check(_ctx: &Context<'_>, _out: &mut Vec<Reason>) {}
