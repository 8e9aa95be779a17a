//! Contract cases for carts: lines oldest first with their products as they are now, quantity
//! changes, removal, the line limit and unknown products as named conflicts, merging a guest's
//! cart into an account's, and the purge of abandoned carts.

use shop::Conflict;
use shop::StoreError;
use shop::accounts::{Role, User};
use shop::catalog::{IdOrSlug, Money, Product, ProductChanges};
use shop::orders::CartLine;
use uuid::Uuid;

use crate::{SharedStore, add_products, at, new_guest, new_user};

async fn add_customer(store: &SharedStore, email: &str) -> User {
    store.insert_user(&new_user(email, Role::Customer, 0), &[]).await.unwrap()
}

/// The cart as (product, quantity) pairs, in the order the store lists them.
async fn cart_of(store: &SharedStore, user_id: Uuid) -> Vec<(Uuid, i64)> {
    store.cart_lines(user_id).await.unwrap().into_iter().map(|line| (line.product.id, line.quantity)).collect()
}

async fn set_quantity(store: &SharedStore, user_id: Uuid, product: &Product, quantity: i64, seconds: i64) {
    store.set_cart_quantity(user_id, product.id, quantity, 50, at(seconds)).await.unwrap();
}

fn assert_conflict(result: Result<(), StoreError>, expected: Conflict) {
    let error = result.unwrap_err();
    assert!(matches!(&error, StoreError::Conflict(conflict) if *conflict == expected), "{error:?}");
}

pub async fn cart_lines_round_trip_oldest_first(store: SharedStore) {
    let ada = add_customer(&store, "ada@example.com").await;
    let grace = add_customer(&store, "grace@example.com").await;
    let products = add_products(&store, &[("pen", 250, 10), ("ink", 900, 5), ("pad", 400, 0)]).await;
    let (pen, ink, pad) = (&products[0], &products[1], &products[2]);
    set_quantity(&store, ada.id, ink, 2, 10).await;
    set_quantity(&store, ada.id, pad, 3, 20).await;
    set_quantity(&store, ada.id, pen, 1, 20).await;
    set_quantity(&store, grace.id, pen, 9, 30).await;

    let lines = store.cart_lines(ada.id).await.unwrap();
    assert_eq!(lines[0], CartLine { product: ink.clone(), quantity: 2, added_at: at(10), updated_at: at(10) });
    // Lines added at the same time come in product id order.
    let mut same_time = [(pen.id, 1), (pad.id, 3)];
    same_time.sort_unstable();
    assert_eq!(lines[1..].iter().map(|line| (line.product.id, line.quantity)).collect::<Vec<_>>(), same_time);
    assert!(lines[1..].iter().all(|line| line.added_at == at(20) && line.updated_at == at(20)));
    assert_eq!(
        lines.iter().find(|line| line.product.id == pad.id).unwrap().product,
        *pad,
        "out of stock: still listed"
    );
    assert_eq!(cart_of(&store, grace.id).await, [(pen.id, 9)], "each user has their own cart");

    // Lines show their products as they are now; a deleted product leaves the cart.
    let repriced =
        ProductChanges { price: Some(Money::from_minor(950, ink.price.currency()).unwrap()), ..Default::default() };
    let ink_now = store.update_product(ink.id, &repriced, None, at(40)).await.unwrap().unwrap();
    store.delete_product(pad.id).await.unwrap();
    let lines = store.cart_lines(ada.id).await.unwrap();
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[0].product, ink_now);
    assert_eq!(lines[1].product.id, pen.id);
    assert!(store.cart_lines(Uuid::now_v7()).await.unwrap().is_empty());
}

pub async fn cart_quantity_changes_keep_the_line(store: SharedStore) {
    let ada = add_customer(&store, "ada@example.com").await;
    let products = add_products(&store, &[("pen", 250, 10), ("ink", 900, 5)]).await;
    let (pen, ink) = (&products[0], &products[1]);
    set_quantity(&store, ada.id, pen, 1, 10).await;
    set_quantity(&store, ada.id, ink, 1, 20).await;
    set_quantity(&store, ada.id, pen, 99, 30).await;
    let lines = store.cart_lines(ada.id).await.unwrap();
    assert_eq!(cart_of(&store, ada.id).await, [(pen.id, 99), (ink.id, 1)], "the line keeps its place");
    assert_eq!((lines[0].added_at, lines[0].updated_at), (at(10), at(30)));
    assert_eq!((lines[1].added_at, lines[1].updated_at), (at(20), at(20)));
    // A line that already exists changes whatever the limit.
    store.set_cart_quantity(ada.id, ink.id, 4, 1, at(40)).await.unwrap();
    assert_eq!(cart_of(&store, ada.id).await, [(pen.id, 99), (ink.id, 4)]);

    assert!(store.remove_cart_item(ada.id, pen.id).await.unwrap());
    assert!(!store.remove_cart_item(ada.id, pen.id).await.unwrap(), "removed once");
    assert!(!store.remove_cart_item(Uuid::now_v7(), ink.id).await.unwrap());
    assert_eq!(cart_of(&store, ada.id).await, [(ink.id, 4)]);
    set_quantity(&store, ada.id, pen, 2, 50).await;
    let readded = store.cart_lines(ada.id).await.unwrap();
    assert_eq!((readded[1].product.id, readded[1].added_at), (pen.id, at(50)), "added anew");
}

pub async fn cart_line_limit_is_a_conflict(store: SharedStore) {
    let ada = add_customer(&store, "ada@example.com").await;
    let grace = add_customer(&store, "grace@example.com").await;
    let products = add_products(&store, &[("pen", 250, 10), ("ink", 900, 5), ("pad", 400, 3)]).await;
    for (seconds, product) in products[..2].iter().enumerate() {
        store.set_cart_quantity(ada.id, product.id, 1, 2, at(seconds as i64)).await.unwrap();
    }
    assert_conflict(store.set_cart_quantity(ada.id, products[2].id, 1, 2, at(10)).await, Conflict::CartFull);
    assert_eq!(cart_of(&store, ada.id).await, [(products[0].id, 1), (products[1].id, 1)], "nothing added");
    store.set_cart_quantity(ada.id, products[0].id, 5, 2, at(11)).await.unwrap();
    store.set_cart_quantity(grace.id, products[2].id, 1, 2, at(12)).await.unwrap();
    assert!(store.remove_cart_item(ada.id, products[1].id).await.unwrap());
    store.set_cart_quantity(ada.id, products[2].id, 1, 2, at(13)).await.unwrap();
    assert_eq!(cart_of(&store, ada.id).await, [(products[0].id, 5), (products[2].id, 1)]);
}

pub async fn unknown_products_in_a_cart_are_a_conflict(store: SharedStore) {
    let ada = add_customer(&store, "ada@example.com").await;
    let products = add_products(&store, &[("pen", 250, 10)]).await;
    assert_conflict(store.set_cart_quantity(ada.id, Uuid::now_v7(), 1, 50, at(1)).await, Conflict::UnknownProduct);
    store.delete_product(products[0].id).await.unwrap();
    assert_conflict(store.set_cart_quantity(ada.id, products[0].id, 1, 50, at(2)).await, Conflict::UnknownProduct);
    assert!(store.cart_lines(ada.id).await.unwrap().is_empty());
}

pub async fn merging_a_cart_adds_up_caps_and_limits(store: SharedStore) {
    let ada = add_customer(&store, "ada@example.com").await;
    let guest = store.insert_user(&new_guest(0), &[]).await.unwrap();
    let products =
        add_products(&store, &[("pen", 250, 10), ("ink", 900, 5), ("pad", 400, 3), ("cap", 100, 7), ("nib", 50, 9)])
            .await;
    let [pen, ink, pad, cap, nib] = [0, 1, 2, 3, 4].map(|index| &products[index]);
    set_quantity(&store, ada.id, pen, 2, 10).await;
    set_quantity(&store, ada.id, ink, 98, 11).await;
    set_quantity(&store, guest.id, nib, 1, 5).await;
    set_quantity(&store, guest.id, ink, 5, 20).await;
    set_quantity(&store, guest.id, pad, 7, 21).await;
    set_quantity(&store, guest.id, cap, 1, 22).await;

    store.merge_cart(guest.id, ada.id, 4, 99, at(60)).await.unwrap();
    let lines = store.cart_lines(ada.id).await.unwrap();
    let merged: Vec<_> = lines.iter().map(|line| (line.product.id, line.quantity)).collect();
    // Oldest first, the guest's lines with their own added_at; the cap line did not fit.
    assert_eq!(merged, [(nib.id, 1), (pen.id, 2), (ink.id, 99), (pad.id, 7)]);
    let ink_line = &lines[2];
    assert_eq!((ink_line.added_at, ink_line.updated_at), (at(11), at(60)), "summed, capped at the maximum");
    assert_eq!((lines[0].added_at, lines[0].updated_at), (at(5), at(60)));
    assert_eq!((lines[1].added_at, lines[1].updated_at), (at(10), at(10)), "untouched");
    assert!(store.cart_lines(guest.id).await.unwrap().is_empty(), "the guest's cart is emptied");

    // Quantities above the maximum are capped also for new lines; an empty cart merges as nothing.
    let other = store.insert_user(&new_guest(1), &[]).await.unwrap();
    set_quantity(&store, other.id, cap, 9, 70).await;
    store.merge_cart(other.id, ada.id, 50, 5, at(80)).await.unwrap();
    assert_eq!(cart_of(&store, ada.id).await.last(), Some(&(cap.id, 5)));
    store.merge_cart(other.id, ada.id, 50, 99, at(90)).await.unwrap();
    assert_eq!(cart_of(&store, ada.id).await.len(), 5);
    store.merge_cart(ada.id, ada.id, 50, 99, at(90)).await.unwrap();
    assert_eq!(cart_of(&store, ada.id).await.len(), 5, "merging a cart into itself changes nothing");
}

pub async fn abandoned_carts_are_purged_by_cutoff_and_limit(store: SharedStore) {
    let mut users = Vec::new();
    for index in 0..5 {
        users.push(add_customer(&store, &format!("user{index}@example.com")).await);
    }
    let products = add_products(&store, &[("pen", 250, 10), ("ink", 900, 5)]).await;
    let (pen, ink) = (&products[0], &products[1]);
    // Abandoned: every line older than the cutoff.
    set_quantity(&store, users[0].id, pen, 1, 0).await;
    set_quantity(&store, users[0].id, ink, 1, 10).await;
    set_quantity(&store, users[1].id, pen, 1, 20).await;
    // Kept: an old line but a recent one too; a line changed exactly at the cutoff.
    set_quantity(&store, users[2].id, pen, 1, 0).await;
    set_quantity(&store, users[2].id, ink, 1, 60).await;
    set_quantity(&store, users[3].id, pen, 1, 0).await;
    set_quantity(&store, users[3].id, pen, 2, 50).await;

    assert_eq!(store.purge_abandoned_carts(at(50), 1).await.unwrap(), 1, "at most the limit");
    assert_eq!(store.purge_abandoned_carts(at(50), 10).await.unwrap(), 1, "then the rest");
    assert_eq!(store.purge_abandoned_carts(at(50), 10).await.unwrap(), 0);
    assert!(cart_of(&store, users[0].id).await.is_empty());
    assert!(cart_of(&store, users[1].id).await.is_empty());
    assert_eq!(cart_of(&store, users[2].id).await, [(pen.id, 1), (ink.id, 1)], "the whole cart stays");
    assert_eq!(cart_of(&store, users[3].id).await, [(pen.id, 2)], "the cutoff is exclusive");
    let found = store.find_product(&IdOrSlug::Id(pen.id)).await.unwrap().unwrap();
    assert_eq!(found.stock, pen.stock, "purging a cart leaves stock alone");
}
