//! Contract cases for orders: placing one reserves every line's stock or none (also under heavy
//! concurrency: never oversold, never negative), links its idempotency record and enqueues its
//! jobs; transitions happen only from the states they name, with stock released and the cart
//! cleared when asked; orders are found and listed by owner and status; a deleted product leaves
//! its order lines; a guest with an order is never purged.

use shop::accounts::{Role, User};
use shop::catalog::{Currency, IdOrSlug, Money, NewProduct, Product, ProductChanges, ProductStatus, Slug, Stock, Text};
use shop::jobs::JobQuery;
use shop::orders::{
    IdempotencyBegin, NewOrder, Order, OrderLine, OrderQuery, OrderStatus, OrderTransition, ReservationFailure,
    ShippingAddress,
};
use shop::{PageRequest, SortOrder};
use uuid::Uuid;

use crate::{SharedStore, add_category, at, new_guest, new_idempotency_record, new_job, new_user};

/// A category and one product per `(slug, price in euro cents, stock)`, created at `at(0)`.
pub async fn add_products(store: &SharedStore, products: &[(&str, i64, i64)]) -> Vec<Product> {
    let category = add_category(store, &format!("category-{}", Uuid::now_v7().simple()), 0).await;
    let mut added = Vec::new();
    for &(slug, price_minor, stock) in products {
        let product = NewProduct {
            id: shop::new_id(),
            name: Text::name(&format!("Product {slug}")).unwrap(),
            slug: Slug::parse(slug).unwrap(),
            description: Text::description("A fine thing.").unwrap(),
            price: Money::from_minor(price_minor, Currency::parse("EUR").unwrap()).unwrap(),
            stock: Stock::new(stock).unwrap(),
            category_id: category.id,
            search_boost: shop::catalog::SearchBoost::default(),
            created_at: at(0),
        };
        added.push(store.insert_product(&product).await.unwrap());
    }
    added
}

pub fn test_shipping_address() -> ShippingAddress {
    ShippingAddress {
        name: "Ada Lovelace".into(),
        line1: "12 St James's Square".into(),
        line2: Some("Flat 3".into()),
        city: "London".into(),
        postal_code: "SW1Y 4JH".into(),
        country: "GB".into(),
    }
}

/// An order in euros of `quantity` units of each product at its current price, placed at
/// `at(seconds)`.
pub fn new_order(user_id: Uuid, lines: &[(&Product, i64)], seconds: i64) -> NewOrder {
    let lines: Vec<OrderLine> = lines
        .iter()
        .map(|(product, quantity)| OrderLine {
            product_id: Some(product.id),
            name: product.name.as_str().to_owned(),
            unit_price_minor: product.price.minor(),
            quantity: *quantity,
        })
        .collect();
    NewOrder {
        id: shop::new_id(),
        user_id,
        currency: Currency::parse("EUR").unwrap(),
        total_minor: lines.iter().map(OrderLine::total_minor).sum(),
        lines,
        shipping_address: test_shipping_address(),
        test_mode: true,
        created_at: at(seconds),
    }
}

async fn add_customer(store: &SharedStore, email: &str) -> User {
    store.insert_user(&new_user(email, Role::Customer, 0), &[]).await.unwrap()
}

async fn product_now(store: &SharedStore, id: Uuid) -> Product {
    store.find_product(&IdOrSlug::Id(id)).await.unwrap().expect("the product exists")
}

async fn place(store: &SharedStore, order: &NewOrder) -> Order {
    store.place_order(order, None, &[]).await.unwrap().expect("the stock is there")
}

pub async fn placing_an_order_reserves_its_stock(store: SharedStore) {
    let ada = add_customer(&store, "ada@example.com").await;
    let products = add_products(&store, &[("lamp", 1000, 5), ("bulb", 500, 3)]).await;
    let (lamp, bulb) = (&products[0], &products[1]);
    let record = new_idempotency_record(ada.id, "key-1", 90);
    assert_eq!(store.begin_idempotent(&record, at(90)).await.unwrap(), IdempotencyBegin::Started);
    let confirmation = new_job("mail.order_placed", 100).queue("mail");
    // Lines keep their checkout order, whatever order their stock is reserved in.
    let order = new_order(ada.id, &[(bulb, 2), (lamp, 1)], 100);
    let placed = store
        .place_order(&order, Some(("checkout", "key-1")), std::slice::from_ref(&confirmation))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        placed,
        Order {
            id: order.id,
            user_id: ada.id,
            status: OrderStatus::PendingPayment,
            currency: order.currency,
            total_minor: 2000,
            lines: order.lines.clone(),
            shipping_address: test_shipping_address(),
            test_mode: true,
            payment_reference: None,
            cancel_reason: None,
            created_at: at(100),
            updated_at: at(100),
            paid_at: None,
            fulfilled_at: None,
            cancelled_at: None,
            refunded_at: None,
        }
    );
    assert_eq!(placed.lines[0].product_id, Some(bulb.id));
    assert_eq!(store.find_order(order.id).await.unwrap(), Some(placed.clone()));
    for (product, stock) in [(lamp, 4), (bulb, 1)] {
        let now = product_now(&store, product.id).await;
        assert_eq!((now.stock.units(), now.version, now.updated_at), (stock, 2, at(100)));
    }
    assert_eq!(store.find_job(confirmation.id).await.unwrap().unwrap().payload, confirmation.payload);
    let linked = store.begin_idempotent(&record, at(91)).await.unwrap();
    assert_eq!(
        linked,
        IdempotencyBegin::Existing(shop::orders::IdempotencyRecord { order_id: Some(order.id), ..record })
    );
    // Without a key nothing is linked; a product's last units can be ordered.
    let again = place(&store, &new_order(ada.id, &[(bulb, 1)], 110)).await;
    assert_eq!(product_now(&store, bulb.id).await.stock.units(), 0);
    assert_eq!(store.find_order(again.id).await.unwrap(), Some(again));
    assert!(store.find_order(Uuid::now_v7()).await.unwrap().is_none());
}

pub async fn failed_reservations_change_nothing(store: SharedStore) {
    let ada = add_customer(&store, "ada@example.com").await;
    let products = add_products(&store, &[("lamp", 1000, 5), ("bulb", 500, 1), ("shade", 300, 10)]).await;
    let (lamp, bulb, shade) = (&products[0], &products[1], &products[2]);
    let archived = ProductChanges { status: Some(ProductStatus::Archived), ..Default::default() };
    let shade = store.update_product(shade.id, &archived, None, at(1)).await.unwrap().unwrap();
    let record = new_idempotency_record(ada.id, "key-1", 5);
    store.begin_idempotent(&record, at(5)).await.unwrap();

    let repriced = {
        let mut order = new_order(ada.id, &[(lamp, 1), (bulb, 1)], 10);
        order.lines[0].unit_price_minor = 999;
        order
    };
    let in_dollars = NewOrder { currency: Currency::parse("USD").unwrap(), ..new_order(ada.id, &[(lamp, 1)], 10) };
    let deleted = {
        let mut order = new_order(ada.id, &[(lamp, 1)], 10);
        order.lines[0].product_id = Some(Uuid::now_v7());
        order
    };
    // Both lines fail; the first in checkout order is reported, whichever is reserved first.
    let (low, high) = if lamp.id < bulb.id { (lamp, bulb) } else { (bulb, lamp) };
    let both_fail = {
        let mut order = new_order(ada.id, &[(high, high.stock.units() + 1), (low, 1)], 10);
        order.lines[1].unit_price_minor += 1;
        order
    };
    let cases = [
        (
            new_order(ada.id, &[(lamp, 2), (bulb, 2)], 10),
            ReservationFailure::OutOfStock { product_id: bulb.id, available: 1 },
        ),
        (
            new_order(ada.id, &[(bulb, 2), (lamp, 2)], 10),
            ReservationFailure::OutOfStock { product_id: bulb.id, available: 1 },
        ),
        (repriced, ReservationFailure::PriceChanged { product_id: lamp.id }),
        (in_dollars, ReservationFailure::PriceChanged { product_id: lamp.id }),
        (new_order(ada.id, &[(lamp, 1), (&shade, 1)], 10), ReservationFailure::Unavailable { product_id: shade.id }),
        (deleted.clone(), ReservationFailure::Unavailable { product_id: deleted.lines[0].product_id.unwrap() }),
        (both_fail, ReservationFailure::OutOfStock { product_id: high.id, available: high.stock.units() }),
    ];
    for (order, expected) in cases {
        let job = new_job("mail.order_placed", 10);
        let result = store.place_order(&order, Some(("checkout", "key-1")), std::slice::from_ref(&job)).await;
        assert_eq!(result.unwrap().unwrap_err(), expected);
        assert!(store.find_order(order.id).await.unwrap().is_none());
        assert!(store.find_job(job.id).await.unwrap().is_none(), "no job without the order");
    }
    for product in [lamp, bulb, &shade] {
        assert_eq!(&product_now(&store, product.id).await, product, "every stock and version unchanged");
    }
    assert_eq!(store.list_orders(&OrderQuery::default()).await.unwrap().total, 0);
    assert_eq!(store.list_jobs(&JobQuery::default()).await.unwrap().total, 0);
    assert_eq!(store.begin_idempotent(&record, at(6)).await.unwrap(), IdempotencyBegin::Existing(record));
}

pub async fn concurrent_orders_never_oversell(store: SharedStore) {
    let products = add_products(&store, &[("scarce", 1000, 50), ("shared", 300, 1000)]).await;
    let (scarce, shared) = (products[0].clone(), products[1].clone());
    let mut customers = Vec::new();
    for index in 0..10 {
        customers.push(add_customer(&store, &format!("customer{index}@example.com")).await);
    }
    let mut checkouts = tokio::task::JoinSet::new();
    for index in 0..200 {
        let store = store.clone();
        // Half also take the shared product, in either line order.
        let lines = match index % 4 {
            0 => vec![(&scarce, 1), (&shared, 1)],
            1 => vec![(&shared, 1), (&scarce, 1)],
            _ => vec![(&scarce, 1)],
        };
        let with_shared = lines.len() == 2;
        let order = new_order(customers[index % customers.len()].id, &lines, 10);
        checkouts.spawn(async move { (with_shared, store.place_order(&order, None, &[]).await.unwrap()) });
    }
    let (mut placed, mut placed_with_shared) = (0, 0);
    while let Some(outcome) = checkouts.join_next().await {
        match outcome.unwrap() {
            (with_shared, Ok(order)) => {
                placed += 1;
                placed_with_shared += i64::from(with_shared);
                assert_eq!(order.status, OrderStatus::PendingPayment);
            }
            (_, Err(failure)) => {
                assert_eq!(failure, ReservationFailure::OutOfStock { product_id: scarce.id, available: 0 });
            }
        }
    }
    assert_eq!(placed, 50, "exactly as many orders as units");
    let scarce_now = product_now(&store, scarce.id).await;
    assert_eq!((scarce_now.stock.units(), scarce_now.version), (0, 51));
    let shared_now = product_now(&store, shared.id).await;
    assert_eq!(shared_now.stock.units(), 1000 - placed_with_shared, "only placed orders took shared units");
    assert_eq!(shared_now.version, 1 + placed_with_shared);
    assert_eq!(store.list_orders(&OrderQuery::default()).await.unwrap().total, 50);
}

pub async fn order_transitions_are_conditional(store: SharedStore) {
    let ada = add_customer(&store, "ada@example.com").await;
    let products = add_products(&store, &[("lamp", 1000, 5)]).await;
    let placed = place(&store, &new_order(ada.id, &[(&products[0], 2)], 100)).await;

    let mut fulfil = OrderTransition::new(placed.id, OrderStatus::Fulfilled, at(150));
    let shipped = new_job("mail.order_shipped", 150);
    fulfil.jobs = vec![shipped.clone()];
    assert_eq!(store.transition_order(&fulfil).await.unwrap(), None, "pending orders are not fulfilled");
    assert_eq!(store.find_order(placed.id).await.unwrap(), Some(placed.clone()), "nothing changed");
    assert!(store.find_job(shipped.id).await.unwrap().is_none());
    assert_eq!(
        store.transition_order(&OrderTransition::new(Uuid::now_v7(), OrderStatus::Paid, at(150))).await.unwrap(),
        None
    );
    let nowhere = OrderTransition { from: Vec::new(), ..OrderTransition::new(placed.id, OrderStatus::Paid, at(150)) };
    assert_eq!(store.transition_order(&nowhere).await.unwrap(), None);

    let receipt = new_job("mail.order_paid", 200).queue("mail");
    let pay = OrderTransition {
        payment_reference: Some("ch_123".into()),
        jobs: vec![receipt.clone()],
        ..OrderTransition::new(placed.id, OrderStatus::Paid, at(200))
    };
    let paid = store.transition_order(&pay).await.unwrap().unwrap();
    let expected = Order {
        status: OrderStatus::Paid,
        payment_reference: Some("ch_123".into()),
        updated_at: at(200),
        paid_at: Some(at(200)),
        ..placed.clone()
    };
    assert_eq!(paid, expected);
    assert_eq!(store.find_order(placed.id).await.unwrap(), Some(paid.clone()));
    assert_eq!(store.find_job(receipt.id).await.unwrap().unwrap().queue, "mail");
    assert_eq!(store.transition_order(&pay).await.unwrap(), None, "paid once");
    assert_eq!(product_now(&store, products[0].id).await.stock.units(), 3, "no stock released unless asked");

    fulfil.at = at(300);
    let fulfilled = store.transition_order(&fulfil).await.unwrap().unwrap();
    assert_eq!(
        fulfilled,
        Order { status: OrderStatus::Fulfilled, updated_at: at(300), fulfilled_at: Some(at(300)), ..paid }
    );
    assert!(store.find_job(shipped.id).await.unwrap().is_some());
    let refund = OrderTransition::new(placed.id, OrderStatus::Refunded, at(400));
    let refunded = store.transition_order(&refund).await.unwrap().unwrap();
    assert_eq!(refunded.status, OrderStatus::Refunded);
    assert_eq!((refunded.refunded_at, refunded.updated_at), (Some(at(400)), at(400)));
    assert_eq!(refunded.payment_reference.as_deref(), Some("ch_123"), "kept when not given");
    assert_eq!((refunded.paid_at, refunded.fulfilled_at, refunded.cancelled_at), (Some(at(200)), Some(at(300)), None));
}

pub async fn cancelling_an_order_releases_its_stock(store: SharedStore) {
    let ada = add_customer(&store, "ada@example.com").await;
    let products = add_products(&store, &[("lamp", 1000, 5), ("bulb", 500, 3)]).await;
    let (lamp, bulb) = (&products[0], &products[1]);
    let placed = place(&store, &new_order(ada.id, &[(lamp, 2), (bulb, 1)], 100)).await;
    store.delete_product(bulb.id).await.unwrap();
    let cancel = OrderTransition {
        cancel_reason: Some("payment declined".into()),
        release_stock: true,
        ..OrderTransition::new(placed.id, OrderStatus::Cancelled, at(200))
    };
    let cancelled = store.transition_order(&cancel).await.unwrap().unwrap();
    assert_eq!(cancelled.status, OrderStatus::Cancelled);
    assert_eq!((cancelled.cancelled_at, cancelled.updated_at), (Some(at(200)), at(200)));
    assert_eq!(cancelled.cancel_reason.as_deref(), Some("payment declined"));
    assert_eq!(cancelled.lines[1].product_id, None, "the deleted product's line stays");
    let lamp_now = product_now(&store, lamp.id).await;
    assert_eq!((lamp_now.stock.units(), lamp_now.version, lamp_now.updated_at), (5, 3, at(200)));
    assert_eq!(store.transition_order(&cancel).await.unwrap(), None, "released once");
    assert_eq!(product_now(&store, lamp.id).await.stock.units(), 5);
}

pub async fn paying_an_order_clears_the_ordered_cart_lines(store: SharedStore) {
    let ada = add_customer(&store, "ada@example.com").await;
    let grace = add_customer(&store, "grace@example.com").await;
    let products = add_products(&store, &[("pen", 250, 10), ("ink", 900, 5), ("pad", 400, 3), ("cap", 100, 7)]).await;
    let [pen, ink, pad, cap] = [0, 1, 2, 3].map(|index| &products[index]);
    for (product, seconds) in [(pen, 50), (ink, 50), (pad, 50), (cap, 100)] {
        store.set_cart_quantity(ada.id, product.id, 1, 50, at(seconds)).await.unwrap();
    }
    store.set_cart_quantity(grace.id, pen.id, 1, 50, at(50)).await.unwrap();
    let placed = place(&store, &new_order(ada.id, &[(pen, 1), (ink, 1), (cap, 1)], 100)).await;
    // Changed after the checkout: a new intention, kept.
    store.set_cart_quantity(ada.id, ink.id, 3, 50, at(150)).await.unwrap();
    let pay = OrderTransition { clear_cart: true, ..OrderTransition::new(placed.id, OrderStatus::Paid, at(200)) };
    store.transition_order(&pay).await.unwrap().unwrap();
    let left: Vec<_> =
        store.cart_lines(ada.id).await.unwrap().into_iter().map(|line| (line.product.id, line.quantity)).collect();
    // Both were added at the same time, so they are listed in product id order.
    let mut expected = vec![(ink.id, 3), (pad.id, 1)];
    expected.sort_unstable();
    assert_eq!(left, expected, "the ordered lines up to the checkout went; others stayed");
    assert_eq!(store.cart_lines(grace.id).await.unwrap().len(), 1, "another user's cart is untouched");
}

pub async fn orders_are_found_and_listed(store: SharedStore) {
    let ada = add_customer(&store, "ada@example.com").await;
    let grace = add_customer(&store, "grace@example.com").await;
    let products = add_products(&store, &[("lamp", 1000, 50), ("bulb", 500, 50)]).await;
    let (lamp, bulb) = (&products[0], &products[1]);
    let mut orders = Vec::new();
    for (user, seconds) in [(&ada, 10), (&ada, 20), (&grace, 30), (&ada, 40), (&ada, 40)] {
        orders.push(place(&store, &new_order(user.id, &[(lamp, 1), (bulb, seconds / 10)], seconds)).await);
    }
    let paid = store.transition_order(&OrderTransition::new(orders[1].id, OrderStatus::Paid, at(50))).await.unwrap();
    orders[1] = paid.unwrap();
    // Newest first, ties by id.
    let mut newest_first = orders.clone();
    newest_first.sort_by_key(|order| std::cmp::Reverse((order.created_at, order.id)));

    let all = store.list_orders(&OrderQuery::default()).await.unwrap();
    assert_eq!((all.items.clone(), all.total), (newest_first.clone(), 5), "with their lines");
    let oldest_first = OrderQuery { sort_order: SortOrder::Asc, ..OrderQuery::default() };
    let ascending = store.list_orders(&oldest_first).await.unwrap().items;
    assert_eq!(ascending, newest_first.iter().rev().cloned().collect::<Vec<_>>());

    let of_ada = store.list_orders(&OrderQuery { user_id: Some(ada.id), ..OrderQuery::default() }).await.unwrap();
    let expected: Vec<_> = newest_first.iter().filter(|order| order.user_id == ada.id).cloned().collect();
    assert_eq!((of_ada.items, of_ada.total), (expected, 4));
    let paid_only =
        store.list_orders(&OrderQuery { status: Some(OrderStatus::Paid), ..OrderQuery::default() }).await.unwrap();
    assert_eq!((paid_only.items, paid_only.total), (vec![orders[1].clone()], 1));
    let none = OrderQuery { user_id: Some(grace.id), status: Some(OrderStatus::Paid), ..OrderQuery::default() };
    assert_eq!(store.list_orders(&none).await.unwrap().total, 0);

    let second_page = OrderQuery { page: PageRequest::new(Some(2), Some(2)).unwrap(), ..OrderQuery::default() };
    let page = store.list_orders(&second_page).await.unwrap();
    assert_eq!((page.items, page.total), (newest_first[2..4].to_vec(), 5));
    let past_the_end = OrderQuery { page: PageRequest::new(Some(4), Some(2)).unwrap(), ..OrderQuery::default() };
    assert!(store.list_orders(&past_the_end).await.unwrap().items.is_empty());
}

pub async fn deleted_products_leave_their_order_lines(store: SharedStore) {
    let ada = add_customer(&store, "ada@example.com").await;
    let products = add_products(&store, &[("lamp", 1000, 5), ("bulb", 500, 3)]).await;
    let placed = place(&store, &new_order(ada.id, &[(&products[0], 1), (&products[1], 2)], 100)).await;
    store.delete_product(products[0].id).await.unwrap();
    let found = store.find_order(placed.id).await.unwrap().unwrap();
    let mut expected = placed.lines.clone();
    expected[0].product_id = None;
    assert_eq!(found.lines, expected, "the snapshot stays: name, price and quantity");
    assert_eq!(found.total_minor, placed.total_minor);
}

pub async fn guests_with_orders_are_not_deleted(store: SharedStore) {
    let shopper = store.insert_user(&new_guest(0), &[]).await.unwrap();
    let idle = store.insert_user(&new_guest(0), &[]).await.unwrap();
    let products = add_products(&store, &[("lamp", 1000, 5)]).await;
    let placed = place(&store, &new_order(shopper.id, &[(&products[0], 1)], 10)).await;
    assert_eq!(store.delete_idle_guests(at(50), 10).await.unwrap(), 1);
    assert!(store.find_user(idle.id).await.unwrap().is_none());
    assert_eq!(store.find_user(shopper.id).await.unwrap(), Some(shopper), "its orders keep it");
    assert_eq!(store.find_order(placed.id).await.unwrap(), Some(placed));
    assert_eq!(store.delete_idle_guests(at(50), 10).await.unwrap(), 0);
}
