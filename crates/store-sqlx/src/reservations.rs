//! What both adapters decide alike when placing an order: the order in which stock is reserved,
//! and why a line could not be reserved.

use shop::StoreError;
use shop::orders::{OrderLine, ReservationFailure};
use uuid::Uuid;

/// One line of an order to reserve stock for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reservation {
    /// The line's position in the order (its index in the checkout).
    pub position: usize,
    pub product_id: Uuid,
    pub quantity: i64,
    pub unit_price_minor: i64,
}

/// A product as a reservation that did not go through reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProductAvailability {
    pub active: bool,
    pub price_minor: i64,
    pub currency: String,
    pub stock: i64,
}

/// The lines of an order in the order their stock is reserved: by product id, so that
/// concurrent orders sharing products lock those rows in the same order and cannot deadlock.
/// Every line of a new order names its product.
pub fn reservation_order(lines: &[OrderLine]) -> Result<Vec<Reservation>, StoreError> {
    let mut reservations = lines
        .iter()
        .enumerate()
        .map(|(position, line)| {
            let product_id = line
                .product_id
                .ok_or_else(|| StoreError::other(anyhow::anyhow!("line {position} of a new order names no product")))?;
            Ok(Reservation { position, product_id, quantity: line.quantity, unit_price_minor: line.unit_price_minor })
        })
        .collect::<Result<Vec<_>, StoreError>>()?;
    reservations.sort_by_key(|reservation| (reservation.product_id, reservation.position));
    Ok(reservations)
}

/// Why `reservation` cannot be made in `currency` from `product` as it is now (`None`: the
/// product is gone); `None` when it can.
pub fn reservation_failure(
    reservation: &Reservation,
    currency: &str,
    product: Option<&ProductAvailability>,
) -> Option<ReservationFailure> {
    let product_id = reservation.product_id;
    let Some(product) = product.filter(|product| product.active) else {
        return Some(ReservationFailure::Unavailable { product_id });
    };
    if product.price_minor != reservation.unit_price_minor || product.currency.trim() != currency {
        return Some(ReservationFailure::PriceChanged { product_id });
    }
    if product.stock < reservation.quantity {
        return Some(ReservationFailure::OutOfStock { product_id, available: product.stock });
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(product_id: Uuid) -> OrderLine {
        OrderLine { product_id: Some(product_id), name: "Thing".into(), unit_price_minor: 500, quantity: 2 }
    }

    fn available(stock: i64) -> ProductAvailability {
        ProductAvailability { active: true, price_minor: 500, currency: "EUR".into(), stock }
    }

    #[test]
    fn reservations_go_by_product_id_and_keep_positions() {
        let (low, high) = (Uuid::from_u128(1), Uuid::from_u128(2));
        let order = reservation_order(&[line(high), line(low)]).unwrap();
        let ids: Vec<_> = order.iter().map(|r| (r.position, r.product_id)).collect();
        assert_eq!(ids, [(1, low), (0, high)]);
        let unnamed = OrderLine { product_id: None, ..line(low) };
        assert!(reservation_order(&[unnamed]).is_err());
    }

    #[test]
    fn failures_name_the_first_rule_broken() {
        let reservation =
            Reservation { position: 0, product_id: Uuid::from_u128(7), quantity: 2, unit_price_minor: 500 };
        let product_id = reservation.product_id;
        assert_eq!(reservation_failure(&reservation, "EUR", Some(&available(2))), None);
        assert_eq!(
            reservation_failure(&reservation, "EUR", Some(&available(1))),
            Some(ReservationFailure::OutOfStock { product_id, available: 1 })
        );
        assert_eq!(
            reservation_failure(&reservation, "USD", Some(&available(5))),
            Some(ReservationFailure::PriceChanged { product_id })
        );
        let repriced = ProductAvailability { price_minor: 600, stock: 0, ..available(0) };
        assert_eq!(
            reservation_failure(&reservation, "EUR", Some(&repriced)),
            Some(ReservationFailure::PriceChanged { product_id })
        );
        let archived = ProductAvailability { active: false, ..available(5) };
        assert_eq!(
            reservation_failure(&reservation, "EUR", Some(&archived)),
            Some(ReservationFailure::Unavailable { product_id })
        );
        assert_eq!(
            reservation_failure(&reservation, "EUR", None),
            Some(ReservationFailure::Unavailable { product_id })
        );
    }
}
