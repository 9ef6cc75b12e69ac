//! The `Date` header value (IMF-fixdate), formatted at most once per second.

use std::time::{SystemTime, UNIX_EPOCH};

/// An HTTP `Date` value, formatted at most once per second.
#[derive(Debug, Default)]
pub struct DateCache {
    second: u64,
    value: Vec<u8>,
}

impl DateCache {
    /// The current date in IMF-fixdate form.
    pub fn now(&mut self) -> &[u8] {
        self.at(SystemTime::now())
    }

    /// The date of `time` in IMF-fixdate form (reformatted only when the second changed).
    pub fn at(&mut self, time: SystemTime) -> &[u8] {
        let secs = time
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        if secs != self.second || self.value.is_empty() {
            self.second = secs;
            self.value = httpdate::fmt_http_date(time).into_bytes();
        }
        &self.value
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn formats_imf_fixdate_once_per_second() {
        let mut d = DateCache::default();
        let t = UNIX_EPOCH + Duration::from_secs(784_111_777);
        assert_eq!(d.at(t), b"Sun, 06 Nov 1994 08:49:37 GMT");
        assert_eq!(
            d.at(t + Duration::from_millis(900)),
            b"Sun, 06 Nov 1994 08:49:37 GMT"
        );
        assert_eq!(
            d.at(t + Duration::from_secs(1)),
            b"Sun, 06 Nov 1994 08:49:38 GMT"
        );
        assert_eq!(d.now().len(), 29);
    }
}
