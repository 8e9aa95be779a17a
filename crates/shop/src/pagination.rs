//! Bounded pages for every list query.

/// The largest page any list returns, whatever the client asks for.
pub const MAX_PAGE_SIZE: u32 = 100;
/// The page size when the client does not say.
pub const DEFAULT_PAGE_SIZE: u32 = 20;

/// Which page of a list to return; construction enforces 1-based pages and the size cap.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PageRequest {
    page: u32,
    limit: u32,
}

impl PageRequest {
    pub fn new(page: Option<u32>, limit: Option<u32>) -> Result<Self, String> {
        let page = page.unwrap_or(1);
        let limit = limit.unwrap_or(DEFAULT_PAGE_SIZE);
        if page == 0 {
            return Err("must be 1 or more".into());
        }
        if limit == 0 || limit > MAX_PAGE_SIZE {
            return Err(format!("must be between 1 and {MAX_PAGE_SIZE}"));
        }
        Ok(Self { page, limit })
    }

    pub fn page(&self) -> u32 {
        self.page
    }

    pub fn limit(&self) -> u32 {
        self.limit
    }

    /// Rows to skip; saturates rather than overflowing on absurd page numbers.
    pub fn offset(&self) -> u64 {
        u64::from(self.page - 1) * u64::from(self.limit)
    }
}

impl Default for PageRequest {
    fn default() -> Self {
        Self { page: 1, limit: DEFAULT_PAGE_SIZE }
    }
}

/// Ascending or descending.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SortOrder {
    Asc,
    #[default]
    Desc,
}

impl SortOrder {
    pub fn parse(raw: &str) -> Result<Self, String> {
        match raw {
            "asc" => Ok(Self::Asc),
            "desc" => Ok(Self::Desc),
            _ => Err("must be asc or desc".into()),
        }
    }

    /// The SQL keyword; the same in every dialect.
    pub fn sql(self) -> &'static str {
        match self {
            Self::Asc => "asc",
            Self::Desc => "desc",
        }
    }
}

/// One page of results and the total number of matches.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub total: u64,
    pub request: PageRequest,
}

impl<T> Page<T> {
    /// The same page with each item converted.
    pub fn map<U>(self, convert: impl FnMut(T) -> U) -> Page<U> {
        Page { items: self.items.into_iter().map(convert).collect(), total: self.total, request: self.request }
    }

    pub fn total_pages(&self) -> u64 {
        self.total.div_ceil(u64::from(self.request.limit()))
    }
}

/// The total of a list, when one page of it tells: a page that is not full (and not past the
/// end) is the last one, so the total is its offset plus its length. `None`: count it.
pub fn total_from_page(page: PageRequest, items: usize) -> Option<u64> {
    let items = u64::try_from(items).ok()?;
    let full = items >= u64::from(page.limit());
    (!full && (items > 0 || page.offset() == 0)).then(|| page.offset() + items)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_request_caps_and_defaults() {
        assert_eq!(PageRequest::new(None, None), Ok(PageRequest { page: 1, limit: 20 }));
        assert!(PageRequest::new(Some(0), None).is_err());
        assert!(PageRequest::new(None, Some(101)).is_err());
        assert_eq!(PageRequest::new(Some(3), Some(10)).map(|p| p.offset()), Ok(20));
    }

    #[test]
    fn total_pages_rounds_up() {
        let page = Page::<u8> { items: vec![], total: 21, request: PageRequest::default() };
        assert_eq!(page.total_pages(), 2);
        let empty = Page::<u8> { items: vec![], total: 0, request: PageRequest::default() };
        assert_eq!(empty.total_pages(), 0);
    }

    #[test]
    fn a_page_that_is_not_full_tells_the_total() {
        let page = |number, limit| PageRequest::new(Some(number), Some(limit)).unwrap();
        assert_eq!(total_from_page(page(1, 20), 7), Some(7));
        assert_eq!(total_from_page(page(3, 20), 5), Some(45));
        assert_eq!(total_from_page(page(1, 20), 0), Some(0), "an empty first page: nothing matches");
        assert_eq!(total_from_page(page(1, 20), 20), None, "a full page may have more after it");
        assert_eq!(total_from_page(page(4, 20), 0), None, "past the end says nothing");
    }
}
