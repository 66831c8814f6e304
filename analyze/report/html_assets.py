"""The CSS and JavaScript inlined into ``index.html`` (:mod:`analyze.report.html`): no file, font
or script is fetched by the page.

The script sorts a table when its header is clicked (by each cell's ``data-v``, numbers
ascending then descending, empty cells last), shows the label of the curve under the pointer
in a tooltip (each curve's wide transparent twin carries ``data-label``), and switches the frame browser's groups.
"""

CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0;color:#1d1d1f;background:#fff}
header{background:#22313f;color:#fff;padding:12px 24px}header a{color:#cfe3ff;margin-right:14px}
main{padding:8px 24px 40px;max-width:1500px}
section{margin:28px 0;padding:8px 0 4px;border-top:1px solid #ddd}
h1{font-size:20px;margin:0 0 6px}h2{font-size:17px;margin:6px 0 8px}
.caption{color:#444;max-width:1100px;margin:4px 0 10px}.notes li{color:#6b4e00}
table.sortable{border-collapse:collapse;font-variant-numeric:tabular-nums;margin:6px 0}
table.sortable th,table.sortable td{padding:3px 9px;border-bottom:1px solid #e4e4e4;text-align:right;white-space:nowrap}
table.sortable th.idx,table.sortable td.idx{text-align:left}
table.sortable thead th{background:#f2f4f7;cursor:pointer;user-select:none;position:sticky;top:0}
table.sortable thead th[aria-sort=ascending]::after{content:" \\25B2"}
table.sortable thead th[aria-sort=descending]::after{content:" \\25BC"}
td.best{font-weight:700}td .mark{color:#b35c00;margin-left:2px}
.figs{display:flex;flex-wrap:wrap;gap:16px}.figs figure{margin:0}.figs img{max-width:100%;border:1px solid #eee}
figcaption{font-size:12px;color:#555}
svg.curves{background:#fff;border:1px solid #eee}svg.curves polyline{fill:none;stroke-width:1.6}
svg.curves polyline.hot{stroke-width:4}
svg.curves polyline.hit{stroke:transparent;stroke-width:10;pointer-events:stroke}svg.curves text{font-size:11px;fill:#333}
#tip{position:fixed;pointer-events:none;background:#22313f;color:#fff;padding:3px 7px;border-radius:3px;
font-size:12px;display:none;z-index:10}
.browser .group{display:none}.browser .group.on{display:block}
.frame{display:flex;gap:8px;align-items:center;margin:6px 0}.frame img{height:150px;image-rendering:auto}
.frame .meta{width:150px;font-size:12px}
"""

JS = """
(function(){
function key(td){var v=td.getAttribute('data-v');if(v===null||v===''){return null}
  var n=parseFloat(v);return isNaN(n)?v:n}
document.querySelectorAll('table.sortable').forEach(function(t){
  t.querySelectorAll('thead th').forEach(function(th,col){
    th.addEventListener('click',function(){
      var asc=th.getAttribute('aria-sort')!=='ascending';
      t.querySelectorAll('thead th').forEach(function(o){o.removeAttribute('aria-sort')});
      th.setAttribute('aria-sort',asc?'ascending':'descending');
      var body=t.tBodies[0],rows=Array.prototype.slice.call(body.rows);
      rows.sort(function(a,b){var x=key(a.cells[col]),y=key(b.cells[col]);
        if(x===null&&y===null){return 0}if(x===null){return 1}if(y===null){return -1}
        var c=(x<y)?-1:(x>y?1:0);return asc?c:-c});
      rows.forEach(function(r){body.appendChild(r)});
    });
  });
});
var tip=document.getElementById('tip');
document.querySelectorAll('svg.curves polyline.hit').forEach(function(p){
  var line=p.previousElementSibling;
  p.addEventListener('mouseenter',function(){line.classList.add('hot');tip.textContent=p.getAttribute('data-label');
    tip.style.display='block'});
  p.addEventListener('mousemove',function(e){tip.style.left=(e.clientX+12)+'px';tip.style.top=(e.clientY+8)+'px'});
  p.addEventListener('mouseleave',function(){line.classList.remove('hot');tip.style.display='none'});
});
var pick=document.getElementById('frame-group');
if(pick){var show=function(){document.querySelectorAll('.browser .group').forEach(function(g){
    g.classList.toggle('on',g.id===pick.value)})};pick.addEventListener('change',show);show()}
})();
"""
