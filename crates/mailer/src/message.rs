//! Turns a rendered [`Mail`] into the MIME message that goes over the wire: From, To, Subject,
//! a Message-ID derived from the sending job, and a multipart/alternative body with the text
//! and the HTML versions (lettre picks 7bit, quoted-printable or base64 for each part).

use lettre::Message;
use lettre::message::{Mailbox, MultiPart};
use shop::mail::Mail;
use uuid::Uuid;

/// Why a message could not be built; the mail can never be sent as it is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum InvalidMessage {
    #[error("the recipient is not a deliverable address")]
    Recipient,
    #[error("the message could not be assembled: {0}")]
    Assembly(String),
}

/// The `Message-ID` of the message sent for `message_id`: the same for every attempt of one job.
pub(crate) fn message_id_header(message_id: Uuid, from: &Mailbox) -> String {
    format!("<{message_id}@{}>", from.email.domain())
}

pub(crate) fn build_message(mail: &Mail, message_id: Uuid, from: &Mailbox) -> Result<Message, InvalidMessage> {
    // The parser's error would quote the address; the caller logs only the redacted form.
    let to = mail.to.parse::<lettre::Address>().map_err(|_| InvalidMessage::Recipient)?;
    Message::builder()
        .from(from.clone())
        .to(Mailbox::new(None, to))
        .subject(mail.subject.as_str())
        .message_id(Some(message_id_header(message_id, from)))
        .multipart(MultiPart::alternative_plain_html(mail.text.clone(), mail.html.clone()))
        .map_err(|error| InvalidMessage::Assembly(error.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mail(subject: &str) -> Mail {
        Mail {
            to: "bob@example.com".into(),
            subject: subject.into(),
            text: "Hello Bob".into(),
            html: "<p>Hello Bob</p>".into(),
        }
    }

    fn from() -> Mailbox {
        "Shopkeep <shop@shop.example>".parse().unwrap()
    }

    fn rendered(message: &Message) -> String {
        String::from_utf8(message.formatted()).unwrap()
    }

    #[test]
    fn carries_the_headers_and_both_parts() {
        let id = Uuid::parse_str("0190f5a4-6a55-7c8e-9d0b-2f6f3c1d2e4f").unwrap();
        let message = build_message(&mail("Your order"), id, &from()).unwrap();
        let text = rendered(&message);
        assert!(text.contains("From: Shopkeep <shop@shop.example>\r\n"), "{text}");
        assert!(text.contains("To: bob@example.com\r\n"), "{text}");
        assert!(text.contains("Subject: Your order\r\n"), "{text}");
        assert!(text.contains("Message-ID: <0190f5a4-6a55-7c8e-9d0b-2f6f3c1d2e4f@shop.example>\r\n"), "{text}");
        assert!(text.contains("multipart/alternative"), "{text}");
        assert!(text.contains("Content-Type: text/plain; charset=utf-8"), "{text}");
        assert!(text.contains("Content-Type: text/html; charset=utf-8"), "{text}");
        assert_eq!(message.envelope().to(), ["bob@example.com".parse::<lettre::Address>().unwrap()]);
    }

    #[test]
    fn a_subject_cannot_inject_headers() {
        let message = build_message(&mail("Hi\r\nBcc: eve@evil.example"), Uuid::nil(), &from()).unwrap();
        let text = rendered(&message);
        assert!(!text.lines().any(|line| line.starts_with("Bcc:")), "{text}");
        assert_eq!(message.envelope().to().len(), 1);
    }

    #[test]
    fn refuses_an_address_it_cannot_deliver_to() {
        let mut bad = mail("Hi");
        bad.to = "not an address".into();
        assert_eq!(build_message(&bad, Uuid::nil(), &from()).unwrap_err(), InvalidMessage::Recipient);
    }
}
