//! The unwind rules the rows point to, interned: each distinct rule is written once into the
//! kernel's rules array and never moves, so rows of any file can share it.

use std::collections::HashMap;

use agent_common::unwind::{UnwindRule, NO_INFO_RULE};

use super::mapped_array::MappedArray;

/// The kernel's rules array and what is in it.
pub struct RuleTable {
    array: MappedArray<UnwindRule>,
    index: HashMap<UnwindRule, u32>,
    /// Rules that did not fit (their rows read as "no info": frame pointers there).
    pub overflowed: u64,
}

impl RuleTable {
    /// An array holding only the no-info rule, at [`NO_INFO_RULE`].
    pub fn new(mut array: MappedArray<UnwindRule>) -> Self {
        array.write(NO_INFO_RULE as usize, &[UnwindRule::NO_INFO]);
        let index = HashMap::from([(UnwindRule::NO_INFO, NO_INFO_RULE)]);
        RuleTable { array, index, overflowed: 0 }
    }

    /// Distinct rules written.
    pub fn len(&self) -> usize {
        self.index.len()
    }

    /// The index of `rule`, writing it first if it is new.
    pub fn intern(&mut self, rule: UnwindRule) -> u32 {
        if let Some(&index) = self.index.get(&rule) {
            return index;
        }
        let index = self.index.len();
        if index >= self.array.len() {
            self.overflowed += 1;
            return NO_INFO_RULE;
        }
        // Written before any row can point to it.
        self.array.write(index, &[rule]);
        self.index.insert(rule, index as u32);
        index as u32
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_are_written_once_and_overflow_to_no_info() {
        let mut rules = RuleTable::new(MappedArray::anonymous(3));
        let rule = |offset| UnwindRule { cfa_offset: offset, cfa_kind: 1, ra_kind: 1, ra_offset: -8, fp_kind: 1, ..Default::default() };
        assert_eq!(rules.intern(rule(8)), 1);
        assert_eq!(rules.intern(rule(16)), 2);
        assert_eq!(rules.intern(rule(8)), 1);
        assert_eq!(rules.array.get(2), rule(16));
        assert_eq!(rules.intern(rule(24)), NO_INFO_RULE, "the array holds 3 rules");
        assert_eq!((rules.len(), rules.overflowed), (3, 1));
    }
}
