/* global document, EventSource */
// The live sale page: renders each snapshot of GET /sale/events (Server-Sent Events, one a
// second) and ticks the countdown locally, against the server's clock.
'use strict'

;(() => {
  const $ = (id) => document.getElementById(id)
  const integer = new Intl.NumberFormat('en-US')
  // 0% and 100% only when exact: 3 of 10,000 is "<0.1%", 9,985 of 10,000 "99.8%", never "0.0%" or "100%".
  const percent = (part, whole) => {
    if (!(whole > 0) || part === 0) return '0%'
    if (part === whole) return '100%'
    const p = (part / whole) * 100
    if (p < 0.1) return '<0.1%'
    if (p > 99.9) return '>99.9%'
    return `${p >= 10 && p <= 90 ? Math.round(p) : p.toFixed(1)}%`
  }
  const rate = (r) => (r === 0 ? '0' : r >= 10 ? integer.format(Math.round(r)) : r.toFixed(1))
  const utcTime = (iso, seconds) => `${new Date(iso).toISOString().slice(11, seconds ? 19 : 16)} UTC`

  const SPARK_POINTS = 60 // one a second: the last minute
  const history = []
  let offsetMs = 0 // the server's clock minus ours
  let nextSaleAt = null
  let source = null

  function setConnection (state, text) {
    $('conn').dataset.state = state
    $('conn-text').textContent = text
  }

  function renderCountdown () {
    if (nextSaleAt === null) return
    const total = Math.max(0, Math.floor((nextSaleAt - (Date.now() + offsetMs)) / 1000))
    const h = Math.floor(total / 3600)
    const m = String(Math.floor((total % 3600) / 60)).padStart(2, '0')
    const s = String(total % 60).padStart(2, '0')
    $('countdown').textContent = h > 0 ? `${h}:${m}:${s}` : `${m}:${s}`
  }

  /** Checkouts per second over the last minute, scaled to the chart's 120 x 40 box. */
  function renderSparkline (value) {
    history.push(value)
    if (history.length > SPARK_POINTS) history.shift()
    const top = Math.max(1, ...history)
    const step = 120 / (SPARK_POINTS - 1)
    const x0 = 120 - (history.length - 1) * step
    const points = history.map((v, i) => `${(x0 + i * step).toFixed(1)},${(38 - (v / top) * 34).toFixed(1)}`)
    $('spark-line').setAttribute('points', points.join(' '))
    $('spark-area').setAttribute('points', `${x0.toFixed(1)},40 ${points.join(' ')} 120,40`)
  }

  function render (snapshot) {
    offsetMs = Date.parse(snapshot.now) - Date.now()
    nextSaleAt = Date.parse(snapshot.next_sale_at)
    $('next-at').textContent = `at ${utcTime(snapshot.next_sale_at)}`
    renderCountdown()

    $('rate').textContent = rate(snapshot.checkouts_per_second)
    renderSparkline(snapshot.checkouts_per_second)
    $('accepted-rate').textContent = `${rate(snapshot.accepted_per_second)} accepted / s`
    $('updated').textContent = `Updated ${utcTime(snapshot.now, true)} (server time)`

    const sale = snapshot.sale
    if (sale === null) {
      $('eyebrow').textContent = 'Current sale'
      $('title').textContent = 'Sale data unavailable'
      $('window').textContent = 'Redis or Postgres is not answering; retrying.'
      for (const id of ['sold', 'held', 'left']) $(id).textContent = '–'
      for (const id of ['sold-pct', 'left-pct']) $(id).innerHTML = '&nbsp;'
      $('bar-sold').style.width = '0'
      $('bar-held').style.width = '0'
      $('scale-max').innerHTML = '&nbsp;'
      setConnection('unavailable', 'Data unavailable')
      return
    }

    $('eyebrow').textContent = sale.left === 0 && sale.held === 0 ? 'Current sale · sold out' : 'Current sale · open'
    $('title').textContent = `Sale #${sale.id}`
    $('window').textContent = `${utcTime(sale.opens_at)} – ${utcTime(sale.closes_at)} · ${integer.format(sale.items)} items`
    $('sold').textContent = integer.format(sale.sold)
    $('held').textContent = integer.format(sale.held)
    $('left').textContent = integer.format(sale.left)
    $('sold-pct').textContent = `${percent(sale.sold, sale.items)} of ${integer.format(sale.items)}`
    $('left-pct').textContent = `${percent(sale.left, sale.items)} still available`
    $('bar-sold').style.width = `${(sale.sold / sale.items) * 100}%`
    $('bar-held').style.width = `${(sale.held / sale.items) * 100}%`
    $('bar').setAttribute('aria-label', `${sale.sold} sold, ${sale.held} held, ${sale.left} left of ${sale.items}`)
    $('scale-max').textContent = integer.format(sale.items)
    setConnection('live', 'Live')
  }

  function connect () {
    source = new EventSource('/sale/events')
    source.onmessage = (event) => render(JSON.parse(event.data))
    source.onerror = () => {
      // The browser retries a dropped stream by itself; a refused one (e.g. a 503 while the
      // server restarts) closes it for good, so start over a little later.
      if (source.readyState === EventSource.CLOSED) {
        setConnection('offline', 'Offline · retrying')
        setTimeout(connect, 3000)
      } else {
        setConnection('connecting', 'Reconnecting…')
      }
    }
  }

  connect()
  setInterval(renderCountdown, 250)
})()
