//! Refuses request bodies whose declared array lengths cannot be real.
//!
//! kafka-protocol 0.18 calls `Vec::with_capacity(n)` with an array length
//! read off the wire before it decodes a single element
//! (kafka-protocol-rs PRs #152/#161 fix this upstream). A ten-byte Metadata
//! request that declares 2^31 topics makes the allocator abort the whole
//! process, which is not a panic anyone can catch. Every array element takes
//! at least one byte on the wire, so a length larger than the bytes left is
//! malformed; this walker checks that before the real decoder runs.
//!
//! Each served request declares a [`Shape`]: its fields up to and including
//! the last array, nested arrays included. Fields after the last array need
//! not be listed. Remove this module once the codec bounds the capacity.

/// One field of a request, as far as finding its arrays needs.
#[derive(Debug, Clone, Copy)]
pub enum Field {
    /// A fixed-width field: `Fixed(1)` for a bool or int8, `Fixed(16)` for a uuid.
    Fixed(usize),
    /// A (nullable) string: a 16-bit length in classic versions.
    Str,
    /// A (nullable) bytes field, such as Produce's records: a 32-bit length
    /// in classic versions.
    Bytes,
    /// An array of structs with the given fields (each closed by tagged
    /// fields in flexible versions).
    Array(Shape),
    /// An array of fixed-width values, e.g. `[int32]` of broker ids.
    FixedArray(usize),
    /// An array of plain values, such as `[int32]` broker ids or
    /// `[string]` config keys: its elements carry no tagged fields.
    ValueArray(Shape),
}

pub type Shape = &'static [Field];

/// For requests whose body has no arrays.
pub const NO_ARRAYS: Shape = &[];

/// Checks every array length in `body` against the bytes that follow it.
/// `flexible` is whether this version uses compact encodings and tagged
/// fields (KIP-482): request header v2.
pub fn check(shape: Shape, flexible: bool, body: &[u8]) -> Result<(), String> {
    let mut reader = Reader {
        buf: body,
        flexible,
    };
    reader.walk(shape)
}

struct Reader<'a> {
    buf: &'a [u8],
    flexible: bool,
}

impl<'a> Reader<'a> {
    fn walk(&mut self, fields: Shape) -> Result<(), String> {
        for field in fields {
            match field {
                Field::Fixed(width) => self.skip(*width)?,
                Field::Str => {
                    let len = self.string_length()?;
                    self.skip(len)?;
                }
                Field::Bytes => {
                    let len = self.bytes_length()?;
                    self.skip(len)?;
                }
                Field::Array(elements) => self.walk_array(elements)?,
                Field::ValueArray(values) => self.walk_values(values)?,
                Field::FixedArray(width) => {
                    let count = self.array_length()?;
                    let len = count
                        .checked_mul(*width)
                        .ok_or_else(|| format!("an array declares {count} elements"))?;
                    self.skip(len)?;
                }
            }
        }
        Ok(())
    }

    fn walk_array(&mut self, elements: Shape) -> Result<(), String> {
        let count = self.array_length()?;
        if count > self.buf.len() {
            return Err(format!(
                "an array declares {count} elements with {} bytes left",
                self.buf.len()
            ));
        }
        for _ in 0..count {
            self.walk(elements)?;
            if self.flexible {
                self.skip_tagged_fields()?;
            }
        }
        Ok(())
    }

    fn walk_values(&mut self, values: Shape) -> Result<(), String> {
        let count = self.array_length()?;
        if count > self.buf.len() {
            return Err(format!(
                "an array declares {count} elements with {} bytes left",
                self.buf.len()
            ));
        }
        for _ in 0..count {
            self.walk(values)?;
        }
        Ok(())
    }

    /// Classic strings have a signed 16-bit length, -1 for null.
    fn string_length(&mut self) -> Result<usize, String> {
        let len = if self.flexible {
            self.compact_length()?
        } else {
            i64::from(i16::from_be_bytes(self.array()?))
        };
        present_length(len)
    }

    /// Classic bytes have a signed 32-bit length, -1 for null.
    fn bytes_length(&mut self) -> Result<usize, String> {
        self.array_length()
    }

    /// Classic arrays have a signed 32-bit length, -1 for null.
    fn array_length(&mut self) -> Result<usize, String> {
        let len = if self.flexible {
            self.compact_length()?
        } else {
            i64::from(i32::from_be_bytes(self.array()?))
        };
        present_length(len)
    }

    /// Compact lengths are an unsigned varint of length + 1, 0 for null.
    fn compact_length(&mut self) -> Result<i64, String> {
        Ok(i64::from(self.varint()?) - 1)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], String> {
        self.take(N)?
            .try_into()
            .map_err(|_| format!("{N} bytes wanted"))
    }

    fn skip_tagged_fields(&mut self) -> Result<(), String> {
        let count = self.varint()?;
        for _ in 0..count {
            self.varint()?;
            let size = self.varint()?;
            self.skip(size as usize)?;
        }
        Ok(())
    }

    fn varint(&mut self) -> Result<u32, String> {
        let mut value = 0u32;
        for i in 0..5 {
            let byte = self.take(1)?.first().copied().unwrap_or(0);
            value |= u32::from(byte & 0x7f) << (i * 7);
            if byte < 0x80 {
                return Ok(value);
            }
        }
        Err("varint longer than 5 bytes".into())
    }

    fn skip(&mut self, n: usize) -> Result<(), String> {
        self.take(n).map(|_| ())
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        if n > self.buf.len() {
            return Err(format!("{n} bytes wanted, {} left", self.buf.len()));
        }
        let (head, tail) = self.buf.split_at(n);
        self.buf = tail;
        Ok(head)
    }
}

/// A null string or array takes no further bytes.
fn present_length(len: i64) -> Result<usize, String> {
    match len {
        -1 => Ok(0),
        len => usize::try_from(len).map_err(|_| format!("negative length {len}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOPICS: Shape = &[Field::Array(&[Field::Str])];
    const NESTED: Shape = &[Field::Array(&[
        Field::Str,
        Field::Array(&[Field::Fixed(4)]),
    ])];

    #[test]
    fn an_array_longer_than_the_body_is_refused() {
        assert!(check(TOPICS, false, &[0x7f, 0xff, 0xff, 0xff, 0, 1, b'a']).is_err());
        assert!(check(TOPICS, true, &[0xff, 0xff, 0xff, 0xff, 0x0f]).is_err());
    }

    #[test]
    fn real_arrays_and_nulls_pass() {
        assert!(check(TOPICS, false, &[0, 0, 0, 1, 0, 1, b'a']).is_ok());
        assert!(check(TOPICS, false, &[0xff, 0xff, 0xff, 0xff]).is_ok());
        assert!(check(TOPICS, true, &[0]).is_ok());
        // One topic "a" with partitions [7], each struct closed by an empty tag section.
        let body = [2, 2, b'a', 2, 0, 0, 0, 7, 0, 0];
        assert!(check(NESTED, true, &body).is_ok());
    }

    #[test]
    fn a_nested_array_is_checked_too() {
        let body = [2, 2, b'a', 0xff, 0xff, 0xff, 0xff, 0x0f, 0, 0, 0, 7, 0, 0];
        assert!(check(NESTED, true, &body).is_err());
    }

    #[test]
    fn truncated_bodies_are_errors_not_panics() {
        let body = [2, 2, b'a', 2, 0, 0, 0, 7, 0, 0];
        for len in 0..body.len() {
            let _ = check(NESTED, true, &body[..len]);
            let _ = check(NESTED, false, &body[..len]);
        }
        assert!(check(NO_ARRAYS, false, &[]).is_ok());
    }
}
