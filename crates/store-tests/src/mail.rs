//! Contract cases for the mail outbox: round trips, one message per sending job, the most
//! recent first with paging, and purges by cutoff and limit.

use shop::PageRequest;
use shop::mail::{Mail, OutboxMail};
use uuid::Uuid;

use crate::{SharedStore, at};

/// A message to `to`, stored with `id` at `at(seconds)`.
pub fn outbox_mail(id: Uuid, to: &str, seconds: i64) -> OutboxMail {
    let mail = Mail {
        to: to.to_owned(),
        subject: format!("Hello {to}"),
        text: format!("Hello {to},\n\nwelcome.\n"),
        html: format!("<p>Hello {to},</p><p>welcome.</p>"),
    };
    OutboxMail { id, mail, created_at: at(seconds) }
}

async fn insert(store: &SharedStore, mail: &OutboxMail) -> Uuid {
    assert!(store.insert_outbox_mail(mail).await.unwrap(), "{} was not stored", mail.id);
    mail.id
}

async fn listed_ids(store: &SharedStore) -> Vec<Uuid> {
    let page = PageRequest::new(Some(1), Some(100)).unwrap();
    store.list_outbox_mail(&page).await.unwrap().items.iter().map(|mail| mail.id).collect()
}

pub async fn outbox_mail_round_trip(store: SharedStore) {
    let empty = store.list_outbox_mail(&PageRequest::default()).await.unwrap();
    assert!(empty.items.is_empty());
    assert_eq!((empty.total, empty.request), (0, PageRequest::default()));

    let long_html = format!(
        "<!doctype html><html><body>{}</body></html>",
        "<p style=\"color: #333\">Zoë’s order — 注文 ✓ 🛒 &amp; «more»</p>\n".repeat(5_000)
    );
    let mail = OutboxMail {
        id: Uuid::now_v7(),
        mail: Mail {
            to: "zoë.ünïcode@example.com".into(),
            subject: "Your account was locked — 账户已锁定 🔒 'quoted'; --".into(),
            text: "Hello Zoë,\r\n\r\nsomeone tried your password 5 times.\n\tمرحبا\n".into(),
            html: long_html,
        },
        created_at: at(0),
    };
    assert!(mail.mail.html.len() > 300_000, "the HTML body is long");
    assert!(store.insert_outbox_mail(&mail).await.unwrap());
    let page = store.list_outbox_mail(&PageRequest::default()).await.unwrap();
    assert_eq!(page.total, 1);
    assert_eq!(page.items, [mail], "every field comes back as stored");
}

pub async fn duplicate_outbox_mail_keeps_the_first(store: SharedStore) {
    let id = Uuid::now_v7();
    let first = outbox_mail(id, "ada@example.com", 0);
    assert!(store.insert_outbox_mail(&first).await.unwrap());
    let again = outbox_mail(id, "grace@example.com", 10);
    assert!(!store.insert_outbox_mail(&again).await.unwrap(), "the same job's message is stored once");
    assert!(!store.insert_outbox_mail(&first).await.unwrap());
    let page = store.list_outbox_mail(&PageRequest::default()).await.unwrap();
    assert_eq!(page.total, 1);
    assert_eq!(page.items, [first], "the first message is kept");
    let other = outbox_mail(Uuid::now_v7(), "ada@example.com", 0);
    assert!(store.insert_outbox_mail(&other).await.unwrap(), "another job's identical message is stored");
}

pub async fn outbox_mail_lists_most_recent_first_and_pages(store: SharedStore) {
    // Ids chosen so that, within one created_at, the larger id comes first.
    let id = |n: u128| Uuid::from_u128(0x0190_0000_0000_7000_8000_0000_0000_0000 + n);
    let oldest = insert(&store, &outbox_mail(id(5), "a@example.com", 0)).await;
    let newest = insert(&store, &outbox_mail(id(1), "b@example.com", 40)).await;
    let tied_low = insert(&store, &outbox_mail(id(2), "c@example.com", 20)).await;
    let tied_high = insert(&store, &outbox_mail(id(9), "d@example.com", 20)).await;
    let middle = insert(&store, &outbox_mail(id(3), "e@example.com", 30)).await;

    let all = store.list_outbox_mail(&PageRequest::default()).await.unwrap();
    assert_eq!(all.total, 5);
    let order: Vec<Uuid> = all.items.iter().map(|mail| mail.id).collect();
    assert_eq!(order, [newest, middle, tied_high, tied_low, oldest], "created_at desc, then id desc");
    assert_eq!(all.items[0].mail.to, "b@example.com");
    assert_eq!(all.items[0].created_at, at(40));

    let second = PageRequest::new(Some(2), Some(2)).unwrap();
    let page = store.list_outbox_mail(&second).await.unwrap();
    assert_eq!((page.total, page.request), (5, second));
    assert_eq!(page.items.iter().map(|mail| mail.id).collect::<Vec<_>>(), [tied_high, tied_low]);
    let last = store.list_outbox_mail(&PageRequest::new(Some(3), Some(2)).unwrap()).await.unwrap();
    assert_eq!(last.items.iter().map(|mail| mail.id).collect::<Vec<_>>(), [oldest]);
    let beyond = store.list_outbox_mail(&PageRequest::new(Some(4), Some(2)).unwrap()).await.unwrap();
    assert!(beyond.items.is_empty());
    assert_eq!(beyond.total, 5, "the total counts every message, whatever the page");
}

pub async fn outbox_mail_is_purged_by_cutoff_and_limit(store: SharedStore) {
    let mut stored = Vec::new();
    for seconds in [10, 20, 30] {
        stored.push(insert(&store, &outbox_mail(Uuid::now_v7(), "ada@example.com", seconds)).await);
    }
    assert_eq!(store.purge_outbox_mail(at(25), 0).await.unwrap(), 0, "a zero limit deletes nothing");
    assert_eq!(store.purge_outbox_mail(at(25), 1).await.unwrap(), 1, "the limit holds");
    assert_eq!(listed_ids(&store).await.len(), 2);
    assert_eq!(store.purge_outbox_mail(at(25), 10).await.unwrap(), 1);
    assert_eq!(store.purge_outbox_mail(at(25), 10).await.unwrap(), 0);
    assert_eq!(listed_ids(&store).await, [stored[2]], "stored after the cutoff");
    assert_eq!(store.purge_outbox_mail(at(30), 10).await.unwrap(), 0, "the cutoff is exclusive");
    assert_eq!(store.purge_outbox_mail(at(31), 10).await.unwrap(), 1);
    let page = store.list_outbox_mail(&PageRequest::default()).await.unwrap();
    assert!(page.items.is_empty());
    assert_eq!(page.total, 0);
}
