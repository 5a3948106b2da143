import { useRef, useState } from 'react';
import { Button } from '@/components/ui/button';

// Drag a box on the image, then "Run" sends it to the server as the action `region_picked`.
// Props (set by chainlit_app.py): src (small preview), width/height (original pixels), imageIndex,
// imageName, task, taskName, batch, boxes (the numbered boxes of the latest answer: [{number, label, xyxy}]).
// Coordinates are sent in ORIGINAL image pixels.
export default function RegionPicker() {
  const picture = useRef(null);
  const [drag, setDrag] = useState(null); // {x0, y0, x1, y1} in displayed pixels
  const [box, setBox] = useState(null); // [x1, y1, x2, y2] in original pixels
  const [status, setStatus] = useState({ kind: 'idle', text: '' });

  const clampPoint = (event) => {
    const rect = picture.current.getBoundingClientRect();
    const x = Math.min(Math.max(event.clientX - rect.left, 0), rect.width);
    const y = Math.min(Math.max(event.clientY - rect.top, 0), rect.height);
    return { x, y, rect };
  };

  const toOriginal = (d, rect) => {
    const sx = props.width / rect.width;
    const sy = props.height / rect.height;
    return [
      Math.round(Math.min(d.x0, d.x1) * sx),
      Math.round(Math.min(d.y0, d.y1) * sy),
      Math.round(Math.max(d.x0, d.x1) * sx),
      Math.round(Math.max(d.y0, d.y1) * sy),
    ];
  };

  const onPointerDown = (event) => {
    if (status.kind === 'running') return;
    event.preventDefault();
    event.currentTarget.setPointerCapture(event.pointerId);
    const { x, y } = clampPoint(event);
    setDrag({ x0: x, y0: y, x1: x, y1: y });
    setBox(null);
    setStatus({ kind: 'idle', text: '' });
  };

  const onPointerMove = (event) => {
    if (!drag) return;
    const { x, y } = clampPoint(event);
    setDrag({ ...drag, x1: x, y1: y });
  };

  const onPointerUp = (event) => {
    if (!drag) return;
    const { x, y, rect } = clampPoint(event);
    const done = { ...drag, x1: x, y1: y };
    if (Math.abs(done.x1 - done.x0) < 3 || Math.abs(done.y1 - done.y0) < 3) {
      setDrag(null); // a click, not a drag
      return;
    }
    setDrag(done);
    setBox(toOriginal(done, rect));
  };

  const run = async () => {
    if (!box) return;
    setStatus({ kind: 'running', text: 'Running…' });
    try {
      await callAction({
        name: 'region_picked',
        payload: { task: props.task, batch: props.batch, image_index: props.imageIndex, xyxy: box },
      });
      setStatus({ kind: 'done', text: 'Sent: the answer is below.' });
    } catch (error) {
      setStatus({ kind: 'error', text: 'Could not send the box; type it as x1,y1,x2,y2 instead.' });
    }
  };

  // Start from a numbered box of the latest answer: shown as if dragged, then Run (or drag another).
  const pickNumbered = (numbered) => {
    if (status.kind === 'running' || !picture.current) return;
    const rect = picture.current.getBoundingClientRect();
    const sx = rect.width / props.width;
    const sy = rect.height / props.height;
    const [x1, y1, x2, y2] = numbered.xyxy;
    setDrag({ x0: x1 * sx, y0: y1 * sy, x1: x2 * sx, y1: y2 * sy });
    setBox(numbered.xyxy.map((v) => Math.round(v)));
    setStatus({ kind: 'idle', text: '' });
  };

  const clear = () => {
    setDrag(null);
    setBox(null);
    setStatus({ kind: 'idle', text: '' });
  };

  const shown = drag && {
    left: Math.min(drag.x0, drag.x1),
    top: Math.min(drag.y0, drag.y1),
    width: Math.abs(drag.x1 - drag.x0),
    height: Math.abs(drag.y1 - drag.y0),
  };

  return (
    <div className="flex flex-col gap-2" style={{ maxWidth: 640 }} data-testid="region-picker">
      <div className="text-sm text-muted-foreground">
        {props.imageName} ({props.width}×{props.height}): drag a box
      </div>
      <div
        className="relative select-none cursor-crosshair rounded-md overflow-hidden border"
        style={{ touchAction: 'none', display: 'inline-block', alignSelf: 'flex-start', lineHeight: 0 }}
        onPointerDown={onPointerDown}
        onPointerMove={onPointerMove}
        onPointerUp={onPointerUp}
        data-testid="region-picker-frame"
      >
        <img
          ref={picture}
          src={props.src}
          alt={props.imageName}
          draggable={false}
          style={{ display: 'block', maxWidth: '100%', maxHeight: '60vh' }}
        />
        {shown && (
          <div
            className="absolute pointer-events-none"
            style={{
              left: shown.left,
              top: shown.top,
              width: shown.width,
              height: shown.height,
              border: '2px solid hsl(var(--primary))',
              background: 'hsl(var(--primary) / 0.2)',
            }}
          />
        )}
      </div>
      {(props.boxes || []).length > 0 && (
        <div className="flex items-center gap-1 flex-wrap" data-testid="region-numbered">
          <span className="text-sm text-muted-foreground">or start from</span>
          {props.boxes.map((numbered) => (
            <Button key={numbered.number} size="sm" variant="outline" onClick={() => pickNumbered(numbered)}>
              #{numbered.number}{numbered.label ? ` ${numbered.label}` : ''}
            </Button>
          ))}
        </div>
      )}
      <div className="flex items-center gap-2 flex-wrap">
        <Button size="sm" onClick={run} disabled={!box || status.kind === 'running'} data-testid="region-run">
          Run {props.taskName}
        </Button>
        <Button size="sm" variant="outline" onClick={clear} disabled={!drag || status.kind === 'running'}>
          Clear
        </Button>
        <span className="text-sm font-mono" data-testid="region-box">
          {box ? box.join(',') : 'no box yet'}
        </span>
        {status.text && (
          <span className={status.kind === 'error' ? 'text-sm text-destructive' : 'text-sm text-muted-foreground'}>
            {status.text}
          </span>
        )}
      </div>
    </div>
  );
}
