//! The text and HTML of each mail the shop sends. Every value put into HTML is escaped.

use std::fmt;

use time::OffsetDateTime;
use time::format_description::well_known::Rfc2822;

use super::message::Mail;
use crate::accounts::Email;

/// Displays a value with the five HTML-significant characters escaped.
pub struct HtmlEscaped<'a>(pub &'a str);

impl fmt::Display for HtmlEscaped<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for c in self.0.chars() {
            match c {
                '&' => f.write_str("&amp;")?,
                '<' => f.write_str("&lt;")?,
                '>' => f.write_str("&gt;")?,
                '"' => f.write_str("&quot;")?,
                '\'' => f.write_str("&#x27;")?,
                c => write!(f, "{c}")?,
            }
        }
        Ok(())
    }
}

/// Wraps a body in the common HTML frame.
fn html_page(title: &str, body: &str) -> String {
    format!(
        "<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>{}</title></head>\n\
         <body style=\"font-family: sans-serif; line-height: 1.5\">\n{body}\n</body></html>\n",
        HtmlEscaped(title)
    )
}

/// To the owner of an account that was just locked after repeated failed logins.
pub fn account_locked(to: &Email, name: &str, locked_until: OffsetDateTime, shop_name: &str) -> Mail {
    let until = locked_until.format(&Rfc2822).unwrap_or_else(|_| locked_until.to_string());
    let subject = format!("{shop_name}: your account was locked after failed sign-in attempts");
    let text = format!(
        "Hello {name},\n\n\
         Someone tried to sign in to your {shop_name} account with a wrong password several times, \
         so sign-ins are paused until {until} (UTC).\n\n\
         If this was you, wait until then and try again. If it was not, nobody got in — but \
         consider changing your password once you can sign in.\n"
    );
    let html = html_page(
        &subject,
        &format!(
            "<p>Hello {},</p>\n<p>Someone tried to sign in to your {} account with a wrong password \
             several times, so sign-ins are paused until <strong>{} (UTC)</strong>.</p>\n\
             <p>If this was you, wait until then and try again. If it was not, nobody got in — but \
             consider changing your password once you can sign in.</p>",
            HtmlEscaped(name),
            HtmlEscaped(shop_name),
            HtmlEscaped(&until)
        ),
    );
    Mail::new(to, subject, text, html)
}

/// To the owner of an account whose sign-in through an external provider was just unlinked, so
/// that an unlinking they did not do (someone else in their session) does not go unnoticed.
pub fn external_identity_unlinked(
    to: &Email,
    name: &str,
    issuer: &str,
    unlinked_at: OffsetDateTime,
    shop_name: &str,
) -> Mail {
    let when = unlinked_at.format(&Rfc2822).unwrap_or_else(|_| unlinked_at.to_string());
    let subject = format!("{shop_name}: a sign-in provider was unlinked from your account");
    let text = format!(
        "Hello {name},\n\n\
         Signing in to your {shop_name} account through {issuer} was turned off on {when} (UTC): \
         that provider no longer signs you in here.\n\n\
         If this was you, there is nothing to do. If it was not, someone else may be signed in to \
         your account: change your password, which signs out your other devices.\n"
    );
    let html = html_page(
        &subject,
        &format!(
            "<p>Hello {},</p>\n<p>Signing in to your {} account through <strong>{}</strong> was turned \
             off on {} (UTC): that provider no longer signs you in here.</p>\n\
             <p>If this was you, there is nothing to do. If it was not, someone else may be signed in \
             to your account: change your password, which signs out your other devices.</p>",
            HtmlEscaped(name),
            HtmlEscaped(shop_name),
            HtmlEscaped(issuer),
            HtmlEscaped(&when)
        ),
    );
    Mail::new(to, subject, text, html)
}

/// How long, in words, for mail text: "30 minutes", "48 hours".
fn in_words(duration: time::Duration) -> String {
    let minutes = duration.whole_minutes();
    if minutes % 60 == 0 && minutes >= 120 { format!("{} hours", minutes / 60) } else { format!("{minutes} minutes") }
}

/// The sign-up mail with the link that proves the address is the owner's.
pub fn verify_email(to: &Email, name: &str, link: &str, valid_for: time::Duration, shop_name: &str) -> Mail {
    let subject = format!("{shop_name}: please confirm your email address");
    let valid = in_words(valid_for);
    let text = format!(
        "Hello {name},\n\nPlease confirm that this is your email address by opening this link \
         within {valid}:\n\n{link}\n\nIf you did not create a {shop_name} account, ignore this mail.\n"
    );
    let html = html_page(
        &subject,
        &format!(
            "<p>Hello {},</p>\n<p>Please confirm that this is your email address by opening this link \
             within {}:</p>\n<p><a href=\"{}\">Confirm my email address</a></p>\n\
             <p>If you did not create a {} account, ignore this mail.</p>",
            HtmlEscaped(name),
            HtmlEscaped(&valid),
            HtmlEscaped(link),
            HtmlEscaped(shop_name)
        ),
    );
    Mail::new(to, subject, text, html)
}

/// The password reset mail with its single-use link.
pub fn password_reset(to: &Email, name: &str, link: &str, valid_for: time::Duration, shop_name: &str) -> Mail {
    let subject = format!("{shop_name}: reset your password");
    let valid = in_words(valid_for);
    let text = format!(
        "Hello {name},\n\nSomeone (hopefully you) asked to reset the password of your {shop_name} \
         account. Open this link within {valid} to choose a new one; it works once:\n\n{link}\n\n\
         Choosing a new password signs you out everywhere. If you did not ask for this, ignore this \
         mail: your password stays as it is.\n"
    );
    let html = html_page(
        &subject,
        &format!(
            "<p>Hello {},</p>\n<p>Someone (hopefully you) asked to reset the password of your {} account. \
             Open this link within {} to choose a new one; it works once:</p>\n\
             <p><a href=\"{}\">Choose a new password</a></p>\n<p>Choosing a new password signs you out \
             everywhere. If you did not ask for this, ignore this mail: your password stays as it is.</p>",
            HtmlEscaped(name),
            HtmlEscaped(shop_name),
            HtmlEscaped(&valid),
            HtmlEscaped(link)
        ),
    );
    Mail::new(to, subject, text, html)
}

/// Asks the owner to confirm a sign-in from a device the account has not used before.
pub fn login_challenge(
    to: &Email,
    name: &str,
    link: &str,
    valid_for: time::Duration,
    from_address: &str,
    shop_name: &str,
) -> Mail {
    let subject = format!("{shop_name}: confirm a sign-in from a new device");
    let valid = in_words(valid_for);
    let text = format!(
        "Hello {name},\n\nYour {shop_name} password was just used to sign in from a device this \
         account has not used before (network address {from_address}). If that was you, confirm it \
         within {valid} with this link, then sign in again on that device:\n\n{link}\n\n\
         If it was not you, do not open the link: someone knows your password. Change it now \
         (\"forgot password\" works even while you are signed out).\n"
    );
    let html = html_page(
        &subject,
        &format!(
            "<p>Hello {},</p>\n<p>Your {} password was just used to sign in from a device this account \
             has not used before (network address {}). If that was you, confirm it within {} with \
             this link, then sign in again on that device:</p>\n<p><a href=\"{}\">Yes, this was me</a></p>\n\
             <p>If it was not you, do not open the link: someone knows your password. Change it now.</p>",
            HtmlEscaped(name),
            HtmlEscaped(shop_name),
            HtmlEscaped(from_address),
            HtmlEscaped(&valid),
            HtmlEscaped(link)
        ),
    );
    Mail::new(to, subject, text, html)
}

/// To a buyer whose order was paid: what they bought, for how much, and where it goes.
pub fn order_confirmation(to: &Email, name: &str, order: &crate::orders::Order, shop_name: &str) -> Mail {
    let money = |minor: i64| format!("{} {}", crate::catalog::format_minor(minor), order.currency.as_str());
    let reference = order.id.simple().to_string();
    let short = &reference[reference.len() - 8..];
    let test = if order.test_mode { " [TEST MODE: nothing was charged]" } else { "" };
    let subject = format!("{shop_name}: order {short} confirmed{test}");
    let lines: Vec<String> = order
        .lines
        .iter()
        .map(|line| format!("{} × {} — {}", line.quantity, line.name, money(line.total_minor())))
        .collect();
    let address = &order.shipping_address;
    let address_lines: Vec<&str> =
        [Some(address.name.as_str()), Some(address.line1.as_str()), address.line2.as_deref()]
            .into_iter()
            .flatten()
            .collect();
    let text = format!(
        "Hello {name},\n\nThank you for your order {short}{test}. We received your payment of {total}.\n\n{items}\n\n\
         It will be sent to:\n{address}\n{postal} {city}\n{country}\n",
        total = money(order.total_minor),
        items = lines.join("\n"),
        address = address_lines.join("\n"),
        postal = address.postal_code,
        city = address.city,
        country = address.country,
    );
    let items_html: String =
        lines.iter().map(|line| format!("<li>{}</li>", HtmlEscaped(line))).collect::<Vec<_>>().join("\n");
    let address_html: String =
        address_lines.iter().map(|line| HtmlEscaped(line).to_string()).collect::<Vec<_>>().join("<br>");
    let html = html_page(
        &subject,
        &format!(
            "<p>Hello {},</p>\n<p>Thank you for your order {}{}. We received your payment of <strong>{}</strong>.</p>\n\
             <ul>\n{items_html}\n</ul>\n<p>It will be sent to:<br>{address_html}<br>{} {}<br>{}</p>",
            HtmlEscaped(name),
            HtmlEscaped(short),
            HtmlEscaped(test),
            HtmlEscaped(&money(order.total_minor)),
            HtmlEscaped(&address.postal_code),
            HtmlEscaped(&address.city),
            HtmlEscaped(&address.country),
        ),
    );
    Mail::new(to, subject, text, html)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn html_values_are_escaped_and_text_is_plain() {
        let to = Email::parse("ada@example.com").unwrap();
        let until = OffsetDateTime::from_unix_timestamp(1_800_000_000).unwrap();
        let mail = account_locked(&to, "<script>alert('x')</script> & co", until, "Shop \"One\"");
        assert_eq!(mail.to, "ada@example.com");
        assert!(mail.html.contains("&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt; &amp; co"));
        assert!(mail.html.contains("Shop &quot;One&quot;"));
        assert!(!mail.html.contains("<script>"));
        assert!(mail.text.contains("Hello <script>alert('x')</script> & co,"), "text is not HTML");
        assert!(mail.text.contains("Fri, 15 Jan 2027 08:00:00 +0000"), "{}", mail.text);
        assert!(mail.subject.starts_with("Shop \"One\": your account was locked"));
        let payload = serde_json::to_value(&mail).unwrap();
        assert_eq!(payload["subject"], mail.subject.as_str());
        assert_eq!(serde_json::from_value::<Mail>(payload).unwrap(), mail);
        assert!(serde_json::from_value::<Mail>(serde_json::json!({ "to": "ada@example.com" })).is_err());
        let bad = serde_json::json!({ "to": "nobody", "subject": "s", "text": "t", "html": "h" });
        assert!(serde_json::from_value::<Mail>(bad).unwrap_err().to_string().contains("recipient"));
    }

    #[test]
    fn link_mails_carry_the_link_escaped_in_html_and_say_how_long_it_works() {
        let to = Email::parse("ada@example.com").unwrap();
        let link = "https://shop.example/reset-password?token=abc&x=1";
        let reset = password_reset(&to, "Ada", link, time::Duration::minutes(30), "Shop");
        assert!(reset.text.contains(link) && reset.text.contains("within 30 minutes"));
        assert!(reset.html.contains("href=\"https://shop.example/reset-password?token=abc&amp;x=1\""));
        let verify = verify_email(&to, "Ada", link, time::Duration::hours(48), "Shop");
        assert!(verify.text.contains("within 48 hours"), "{}", verify.text);
        assert!(verify.subject.contains("confirm your email"));
    }

    #[test]
    fn the_unlinking_mail_names_the_issuer_escaped_in_html() {
        let to = Email::parse("ada@example.com").unwrap();
        let at = OffsetDateTime::from_unix_timestamp(1_800_000_000).unwrap();
        let mail = external_identity_unlinked(&to, "Ada", "https://idp.example/?a=1&b=<2>", at, "Shop");
        assert!(mail.text.contains("through https://idp.example/?a=1&b=<2> was turned off"), "{}", mail.text);
        assert!(mail.text.contains("Fri, 15 Jan 2027 08:00:00 +0000"), "{}", mail.text);
        assert!(mail.html.contains("https://idp.example/?a=1&amp;b=&lt;2&gt;"), "{}", mail.html);
        assert!(mail.subject.starts_with("Shop: a sign-in provider was unlinked"));
    }
}
