//! The 2-byte time-to-live of weed (`needle/volume_ttl.go`): a count and a unit.

use std::fmt;

/// A time-to-live: `count` units. Units: 0 none, 1 minute, 2 hour, 3 day, 4 week, 5 month (30
/// days), 6 year (365 days). Unknown units mean "no TTL", as in weed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct Ttl {
    /// How many units.
    pub count: u8,
    /// The unit byte as stored.
    pub unit: u8,
}

impl Ttl {
    /// No TTL.
    pub const NONE: Ttl = Ttl { count: 0, unit: 0 };

    /// Reads the stored `[count, unit]` bytes.
    pub const fn from_bytes(b: [u8; 2]) -> Self {
        Ttl {
            count: b[0],
            unit: b[1],
        }
    }

    /// The stored `[count, unit]` bytes.
    pub const fn to_bytes(self) -> [u8; 2] {
        [self.count, self.unit]
    }

    /// The TTL in minutes, as weed's `TTL.Minutes()` computes it (0 = no TTL).
    pub const fn minutes(self) -> u32 {
        let per_unit: u32 = match self.unit {
            1 => 1,
            2 => 60,
            3 => 60 * 24,
            4 => 60 * 24 * 7,
            5 => 60 * 24 * 30,
            6 => 60 * 24 * 365,
            _ => 0,
        };
        self.count as u32 * per_unit
    }

    /// The TTL in seconds (0 = no TTL).
    pub const fn seconds(self) -> u64 {
        self.minutes() as u64 * 60
    }

    /// Whether this is a TTL at all.
    pub const fn is_some(self) -> bool {
        self.minutes() > 0
    }
}

impl fmt::Display for Ttl {
    /// Formats as weed does (`3m`, `4h`, `5d`, `6w`, `7M`, `8y`); empty for no TTL.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let unit = match self.unit {
            1 => "m",
            2 => "h",
            3 => "d",
            4 => "w",
            5 => "M",
            6 => "y",
            _ => return Ok(()),
        };
        if self.count == 0 {
            return Ok(());
        }
        write!(f, "{}{}", self.count, unit)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minutes_and_display() {
        assert_eq!(Ttl::from_bytes([3, 1]).minutes(), 3);
        assert_eq!(Ttl::from_bytes([3, 1]).to_string(), "3m");
        assert_eq!(Ttl::from_bytes([2, 2]).seconds(), 7200);
        assert_eq!(Ttl::from_bytes([1, 3]).minutes(), 1440);
        assert_eq!(Ttl::from_bytes([1, 4]).minutes(), 10080);
        assert_eq!(Ttl::from_bytes([1, 5]).minutes(), 43200);
        assert_eq!(Ttl::from_bytes([255, 6]).minutes(), 255 * 525_600);
        assert_eq!(Ttl::from_bytes([5, 6]).to_string(), "5y");
        assert!(!Ttl::from_bytes([5, 7]).is_some());
        assert_eq!(Ttl::from_bytes([5, 7]).to_string(), "");
        assert!(!Ttl::NONE.is_some());
        assert_eq!(Ttl::from_bytes([9, 2]).to_bytes(), [9, 2]);
    }
}
