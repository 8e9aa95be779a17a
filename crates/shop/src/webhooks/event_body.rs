//! The body of a webhook delivery: the contract merchants' receivers parse, owned here so that
//! it changes only on purpose. `{"id", "type", "createdAt", "data": {"order": …}}`, the order
//! in the same shape the shop's API answers with; keys sorted, the exact bytes stored and
//! signed once per delivery.

use serde::Serialize;
use time::OffsetDateTime;
use uuid::Uuid;

use super::model::WebhookEvent;
use crate::catalog::format_minor;
use crate::orders::{Order, OrderLine, ShippingAddress};

/// The JSON body of `event` about `order`.
pub fn event_body(event: &WebhookEvent, order: &Order) -> Result<String, serde_json::Error> {
    let body = EventBody {
        id: event.id,
        event_type: event.event_type.as_str(),
        created_at: event.occurred_at,
        data: EventData { order: OrderView::from(order) },
    };
    // Through a `Value`, whose maps sort their keys: the body's bytes do not depend on field
    // order here.
    Ok(serde_json::to_value(body)?.to_string())
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct EventBody<'a> {
    id: Uuid,
    #[serde(rename = "type")]
    event_type: &'static str,
    #[serde(with = "time::serde::rfc3339")]
    created_at: OffsetDateTime,
    data: EventData<'a>,
}

#[derive(Serialize)]
struct EventData<'a> {
    order: OrderView<'a>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct OrderView<'a> {
    id: Uuid,
    user_id: Uuid,
    status: &'static str,
    total: String,
    currency: &'a str,
    lines: Vec<LineView<'a>>,
    shipping_address: AddressView<'a>,
    test_mode: bool,
    cancel_reason: Option<&'a str>,
    #[serde(with = "time::serde::rfc3339")]
    created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    updated_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339::option")]
    paid_at: Option<OffsetDateTime>,
    #[serde(with = "time::serde::rfc3339::option")]
    fulfilled_at: Option<OffsetDateTime>,
    #[serde(with = "time::serde::rfc3339::option")]
    cancelled_at: Option<OffsetDateTime>,
    #[serde(with = "time::serde::rfc3339::option")]
    refunded_at: Option<OffsetDateTime>,
}

impl<'a> From<&'a Order> for OrderView<'a> {
    fn from(order: &'a Order) -> Self {
        Self {
            id: order.id,
            user_id: order.user_id,
            status: order.status.api_name(),
            total: format_minor(order.total_minor),
            currency: order.currency.as_str(),
            lines: order.lines.iter().map(LineView::from).collect(),
            shipping_address: AddressView::from(&order.shipping_address),
            test_mode: order.test_mode,
            cancel_reason: order.cancel_reason.as_deref(),
            created_at: order.created_at,
            updated_at: order.updated_at,
            paid_at: order.paid_at,
            fulfilled_at: order.fulfilled_at,
            cancelled_at: order.cancelled_at,
            refunded_at: order.refunded_at,
        }
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct LineView<'a> {
    /// `null` once the product was deleted.
    product_id: Option<Uuid>,
    name: &'a str,
    unit_price: String,
    quantity: i64,
    line_total: String,
}

impl<'a> From<&'a OrderLine> for LineView<'a> {
    fn from(line: &'a OrderLine) -> Self {
        Self {
            product_id: line.product_id,
            name: &line.name,
            unit_price: format_minor(line.unit_price_minor),
            quantity: line.quantity,
            line_total: format_minor(line.total_minor()),
        }
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct AddressView<'a> {
    name: &'a str,
    line1: &'a str,
    line2: Option<&'a str>,
    city: &'a str,
    postal_code: &'a str,
    country: &'a str,
}

impl<'a> From<&'a ShippingAddress> for AddressView<'a> {
    fn from(address: &'a ShippingAddress) -> Self {
        Self {
            name: &address.name,
            line1: &address.line1,
            line2: address.line2.as_deref(),
            city: &address.city,
            postal_code: &address.postal_code,
            country: &address.country,
        }
    }
}
