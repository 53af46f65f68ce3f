//! Error text built from hostile input (serde quotes a wrongly typed string whole in its error):
//! clipped, so one error cannot copy a whole request, record or store answer into a log line, a
//! dead letter's reason or a client's answer.

/// The longest error text kept from a decoder, in bytes.
pub const MAX_ERROR_BYTES: usize = 1024;

/// `message`, cut at a character boundary to at most [`MAX_ERROR_BYTES`] with a note of how much was
/// left out.
pub fn clip(message: String) -> String {
    if message.len() <= MAX_ERROR_BYTES {
        return message;
    }
    let mut end = MAX_ERROR_BYTES;
    while !message.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}… ({} more bytes)", &message[..end], message.len() - end)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_messages_are_cut_at_a_char_boundary() {
        assert_eq!(clip("short".into()), "short");
        let long = "é".repeat(2000);
        let cut = clip(long);
        assert!(cut.len() < MAX_ERROR_BYTES + 40, "{}", cut.len());
        assert!(cut.ends_with("(2976 more bytes)"), "{cut}");
    }
}
